#!/usr/bin/env bash
# Removes Bitsmith for the current user: the program (<root>/app), the menu entry, the icon and the
# `bitsmith` command. Models and chats are kept unless you say otherwise.
#
#   uninstall.sh [--prefix DIR] [--bin-dir DIR] [--keep-data | --remove-data]
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
DATA_HOME="${XDG_DATA_HOME:-$HOME/.local/share}"
ROOT="${BITSMITH_HOME:-$DATA_HOME/Bitsmith}"
# Run from an installed app/ folder, the root is its parent.
[ "$(basename "$HERE")" = app ] && [ -f "$HERE/bootstrap.py" ] && ROOT="$(dirname "$HERE")"
BIN_DIR="$HOME/.local/bin"
KEEP=""
while [ $# -gt 0 ]; do
  case "$1" in
    --prefix) ROOT="$2"; shift 2 ;;
    --bin-dir) BIN_DIR="$2"; shift 2 ;;
    --keep-data) KEEP=1; shift ;;
    --remove-data) KEEP=0; shift ;;
    -h|--help) sed -n '2,5p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "uninstall.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
APP="$ROOT/app"
if [ -z "$KEEP" ]; then
  if [ -t 0 ]; then
    read -r -p "Keep your models and chats in $ROOT? [Y/n] " answer
    case "$answer" in [nN]*) KEEP=0 ;; *) KEEP=1 ;; esac
  else
    KEEP=1
  fi
fi
# Only a folder named Bitsmith is deleted whole: a custom --prefix (say ~/Documents) may hold other files.
ours=0
case "$(basename "$ROOT")" in Bitsmith|bitsmith) ours=1 ;; esac

rm -f "$DATA_HOME/applications/bitsmith.desktop" \
  "$DATA_HOME/icons/hicolor/256x256/apps/bitsmith.png" "$DATA_HOME/icons/hicolor/scalable/apps/bitsmith.svg"
if [ -L "$BIN_DIR/bitsmith" ] && [ "$(readlink "$BIN_DIR/bitsmith")" = "$APP/bitsmith" ]; then
  rm -f "$BIN_DIR/bitsmith"
fi
command -v update-desktop-database >/dev/null && update-desktop-database -q "$DATA_HOME/applications" || true
rm -rf "$APP"
echo "Removed the Bitsmith program from $APP."
if [ "$KEEP" = 0 ]; then
  if [ "$ours" = 1 ] && [ "$ROOT" != "$HOME" ] && [ "$ROOT" != / ]; then
    rm -rf "$ROOT"
    echo "Removed your Bitsmith models and chats ($ROOT)."
  else
    echo "Kept $ROOT: it is not a folder named Bitsmith, so it may hold other files."
    echo "Delete your models and chats there by hand if you want them gone."
  fi
else
  [ -d "$ROOT" ] && echo "Your models and chats are still in $ROOT."
fi
