#!/usr/bin/env bash
# Installs Bitsmith for the current user, without root: uv (bundled, or downloaded once) fetches Python
# and runs the shared bootstrap, which picks the PyTorch build for this machine's GPU, installs into
# <root>/app/env and checks it; then a menu entry, an icon and a `bitsmith` command are added.
# Running it again finishes an interrupted install, or updates an older one; models and chats are kept.
# A copy stays in <root>/app, so `~/.local/share/Bitsmith/app/install.sh --repair` works without the download.
#
#   ./install.sh [--prefix DIR] [--bin-dir DIR] [--repair|--update] [--uv PATH] [--python VERSION|PATH]
#                [--no-shortcuts] [bootstrap options: --allow-cpu --build cpu|cu128|... --offline
#                 --find-links DIR --wheel FILE --torch SPEC --without-llama-cpp]
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
SELF="$HERE/$(basename "${BASH_SOURCE[0]}")"

# Started by a double-click in a file manager (no terminal): open a terminal window, so the progress, the
# question about the CPU and the result in plain words can be seen.
if [ ! -t 0 ] && [ ! -t 1 ] && [ -z "${BITSMITH_TERMINAL:-}" ] \
    && { [ -n "${DISPLAY:-}" ] || [ -n "${WAYLAND_DISPLAY:-}" ]; }; then
  export BITSMITH_TERMINAL=1
  for term in x-terminal-emulator gnome-terminal konsole xfce4-terminal xterm; do
    command -v "$term" >/dev/null || continue
    case "$term" in
      gnome-terminal) exec "$term" -- bash "$SELF" "$@" ;;
      xfce4-terminal) exec "$term" -x bash "$SELF" "$@" ;;
      *) exec "$term" -e bash "$SELF" "$@" ;;
    esac
  done
fi
# In the window opened above, keep it open at the end until the user has read the outcome.
pause_at_exit() {
  [ -n "${BITSMITH_TERMINAL:-}" ] && [ -t 0 ] && read -r -p "Press Enter to close this window. " _ || true
}
trap pause_at_exit EXIT

# A release bundle holds everything side by side; a repo checkout keeps them in installers/ and resources/.
first() { for f in "$@"; do [ -e "$f" ] && { echo "$f"; return 0; }; done; return 1; }
# shellcheck disable=SC1090
. "$(first "$HERE/versions.env" "$HERE/../versions.env")"
BOOTSTRAP="$(first "$HERE/bootstrap.py" "$HERE/../bootstrap.py")"
ICON_PNG="$(first "$HERE/bitsmith.png" "$HERE/../../resources/bitsmith.png")"
ICON_SVG="$(first "$HERE/bitsmith.svg" "$HERE/../../resources/bitsmith.svg")"

DATA_HOME="${XDG_DATA_HOME:-$HOME/.local/share}"
ROOT="${BITSMITH_HOME:-$DATA_HOME/Bitsmith}"
CUSTOM_ROOT="${BITSMITH_HOME:+1}"
# Run from an installed app/ folder (repair, update): the root is its parent.
if [ "$(basename "$HERE")" = app ] && { [ -f "$HERE/install.json" ] || [ -f "$HERE/install-incomplete.json" ]; }; then
  ROOT="$(dirname "$HERE")"
  [ "$ROOT" = "$DATA_HOME/Bitsmith" ] || CUSTOM_ROOT=1
fi
BIN_DIR="$HOME/.local/bin"
MODE=install
UV=""
PY="$PYTHON_VERSION"
SHORTCUTS=1
PASS=()
while [ $# -gt 0 ]; do
  case "$1" in
    --prefix) ROOT="$2"; CUSTOM_ROOT=1; shift 2 ;;
    --bin-dir) BIN_DIR="$2"; shift 2 ;;
    --repair) MODE=repair; shift ;;
    --update) MODE=update; shift ;;
    --uv) UV="$2"; shift 2 ;;
    --python) PY="$2"; shift 2 ;;
    --no-shortcuts) SHORTCUTS=0; shift ;;
    -h|--help) sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) PASS+=("$1"); shift ;;
  esac
done
case "$ROOT" in /*) ;; *) ROOT="$PWD/$ROOT" ;; esac
APP="$ROOT/app"

say() { printf '%s\n' "$*"; }
fail() { say "Problem: $1"; say "What to do: $2"; exit 2; }

mkdir -p "$APP" 2>/dev/null || fail "cannot create $APP." "Choose a folder you own with --prefix."

fetch_uv() {  # the official release archive, checked against its published SHA-256
  local arch url tmp
  case "$(uname -m)" in x86_64|amd64) arch=x86_64 ;; aarch64|arm64) arch=aarch64 ;;
    *) fail "this processor ($(uname -m)) is not supported." "Use an x86_64 or arm64 Linux PC." ;; esac
  url="https://github.com/astral-sh/uv/releases/download/$UV_VERSION/uv-$arch-unknown-linux-gnu.tar.gz"
  command -v curl >/dev/null || fail "curl is needed to download uv." "Install curl, or use the release bundle, which carries uv."
  tmp="$(mktemp -d)"
  say "Downloading uv $UV_VERSION..."
  if ! { curl -fsSL --retry 3 -o "$tmp/uv.tgz" "$url" && curl -fsSL --retry 3 -o "$tmp/uv.sha256" "$url.sha256"; }; then
    fail "uv could not be downloaded (no internet connection?)." "Connect to the internet and run this again."
  fi
  (cd "$tmp" && [ "$(cut -d' ' -f1 uv.sha256)" = "$(sha256sum uv.tgz | cut -d' ' -f1)" ]) \
    || fail "the downloaded uv is damaged." "Run this again."
  tar -xzf "$tmp/uv.tgz" -C "$tmp" && cp "$tmp/uv-$arch-unknown-linux-gnu/uv" "$APP/uv.new" && mv "$APP/uv.new" "$APP/uv"
  rm -rf "$tmp"
}

# Keep what the installed app needs to repair and uninstall itself in app/ (atomically: copy, then rename).
copy_in() { cp "$1" "$2.new" && mv "$2.new" "$2"; }
if [ -n "$UV" ]; then copy_in "$UV" "$APP/uv"
elif [ -x "$HERE/uv" ]; then copy_in "$HERE/uv" "$APP/uv"
elif [ ! -x "$APP/uv" ]; then
  if command -v uv >/dev/null; then copy_in "$(command -v uv)" "$APP/uv"; else fetch_uv; fi
fi
chmod +x "$APP/uv"
for f in "$BOOTSTRAP" "$HERE/uninstall.sh" "$SELF" "$(first "$HERE/versions.env" "$HERE/../versions.env")" \
    "$(first "$HERE/bitsmith.desktop.in")" "$ICON_PNG" "$ICON_SVG"; do
  [ "$f" -ef "$APP/$(basename "$f")" ] || copy_in "$f" "$APP/$(basename "$f")"
done
chmod +x "$APP/uninstall.sh" "$APP/install.sh"
if [ ! "$HERE" -ef "$APP" ] && compgen -G "$HERE/wheels/bitsmith-*.whl" >/dev/null; then
  rm -rf "$APP/wheels.new"; mkdir -p "$APP/wheels.new"; cp "$HERE"/wheels/bitsmith-*.whl "$APP/wheels.new/"
  rm -rf "$APP/wheels"; mv "$APP/wheels.new" "$APP/wheels"
fi

export UV_PYTHON_INSTALL_DIR="$APP/python" UV_CACHE_DIR="$APP/uv-cache" UV_NO_CONFIG=1 UV_NO_PROGRESS=1
UV_RUN=("$APP/uv" run --no-project --python "$PY")
MANAGED=1
case "$PY" in */*) MANAGED=0 ;; *) UV_RUN+=(--managed-python) ;; esac
for a in "${PASS[@]}"; do
  if [ "$a" = "--offline" ]; then UV_RUN+=(--offline); fi
done
if [ "$MANAGED" = 1 ]; then
  say "Getting Python $PY (about 30 MB, once)..."
  "$APP/uv" python install "$PY" >/dev/null \
    || fail "Python $PY could not be downloaded (no internet connection?)." "Connect to the internet and run this again."
fi
rm -f "$APP/last-message.txt"
# In a terminal the bootstrap may ask: when the GPU cannot be used (no driver, driver too old), install for the CPU?
ASK=()
[ -t 0 ] && ASK=(--ask)
set +e
"${UV_RUN[@]}" "$APP/bootstrap.py" "$MODE" --root "$ROOT" --uv "$APP/uv" --python "$PY" "${ASK[@]}" "${PASS[@]}"
code=$?
set -e
if [ "$code" -ne 0 ] && [ "$code" -ne 1 ]; then
  # The bootstrap leaves last-message.txt with the problem and its fix; without it, it never started.
  [ -f "$APP/last-message.txt" ] || say "Problem: the installer stopped (exit $code). What to do: run it again; it continues where it stopped."
  [ "$code" -eq 3 ] && say "(To install for the CPU anyway, run this again with --allow-cpu.)"
  exit "$code"
fi

# Launchers: `bitsmith` (command line) and bitsmith-gui (the app); a custom root travels as BITSMITH_HOME.
home_line=""
[ -n "$CUSTOM_ROOT" ] && home_line="export BITSMITH_HOME=$(printf '%q' "$ROOT")"
write_launcher() {
  printf '#!/bin/sh\n%s\nexec %s "$@"\n' "$home_line" "$2" > "$APP/$1.new"
  chmod +x "$APP/$1.new" && mv "$APP/$1.new" "$APP/$1"
}
write_launcher bitsmith "$(printf '%q' "$APP/env/bin/bitsmith")"
write_launcher bitsmith-gui "$(printf '%q' "$APP/env/bin/python") -m bitsmith.app"

if [ "$SHORTCUTS" = 1 ]; then
  mkdir -p "$BIN_DIR" "$DATA_HOME/applications" "$DATA_HOME/icons/hicolor/256x256/apps" \
    "$DATA_HOME/icons/hicolor/scalable/apps"
  ln -sfn "$APP/bitsmith" "$BIN_DIR/bitsmith"
  cp "$ICON_PNG" "$DATA_HOME/icons/hicolor/256x256/apps/bitsmith.png"
  cp "$ICON_SVG" "$DATA_HOME/icons/hicolor/scalable/apps/bitsmith.svg"
  # The Exec key quotes the path in two layers (Desktop Entry spec): inside "..." each of " ` $ \ takes a
  # backslash, then the file's string escaping doubles every backslash; % becomes %% (field codes).
  exec_path="$(printf '%s' "$APP/bitsmith-gui" | sed -e 's/\\/\\\\\\\\/g' -e 's/["`$]/\\\\&/g' -e 's/%/%%/g')"
  while IFS= read -r line; do
    [ "$line" = "Exec=@EXEC@" ] && line="Exec=\"$exec_path\""
    printf '%s\n' "$line"
  done < "$APP/bitsmith.desktop.in" > "$DATA_HOME/applications/bitsmith.desktop.new"
  mv "$DATA_HOME/applications/bitsmith.desktop.new" "$DATA_HOME/applications/bitsmith.desktop"
  command -v update-desktop-database >/dev/null && update-desktop-database -q "$DATA_HOME/applications" || true
  say "Added Bitsmith to the applications menu, and the 'bitsmith' command to $BIN_DIR."
  case ":$PATH:" in *":$BIN_DIR:"*) ;; *) say "(Add $BIN_DIR to your PATH to use 'bitsmith' in a terminal.)" ;; esac
fi
say "Bitsmith lives in $ROOT (program in app/, your models and chats beside it)."
say "To repair: $APP/install.sh --repair   To uninstall: $APP/uninstall.sh"
exit "$code"
