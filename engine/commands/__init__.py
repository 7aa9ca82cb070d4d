"""One module per `bitsmith` subcommand; each defines `register(subparsers)`.

The CLI discovers the modules here, so adding a subcommand never edits a shared file.
"""
