"""The main window's pages: one module per page, `app/pages/<name>.py` exposing `<Name>Page(QWidget)`."""
