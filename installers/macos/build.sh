#!/usr/bin/env bash
# Builds dist/Bitsmith-VERSION-arm64.dmg on a Mac with Apple silicon (NOT built or tested in this project's
# CI, which runs on Linux; see installers/macos/README.md).
#
# The .app is a thin launcher: on first start it runs the bundled uv + bootstrap (the same code as on
# Windows and Linux) to install a private Python, PyTorch (the default macOS build, which uses Metal) and
# Bitsmith into ~/Library/Application Support/Bitsmith/app, showing progress in a Terminal window; later
# starts go straight to the app. Needs: Xcode command line tools (hdiutil, sips, iconutil), Python 3.11+.
#
#   installers/macos/build.sh [--out DIR] [--sign "Developer ID Application: NAME"]
set -euo pipefail
REPO="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$REPO"
# shellcheck disable=SC1091
. installers/versions.env
OUT=dist
SIGN=""
while [ $# -gt 0 ]; do
  case "$1" in
    --out) OUT="$2"; shift 2 ;;
    --sign) SIGN="$2"; shift 2 ;;
    *) echo "usage: build.sh [--out DIR] [--sign IDENTITY]" >&2; exit 2 ;;
  esac
done
[ "$(uname -s)" = Darwin ] || { echo "build.sh: run this on macOS (hdiutil, iconutil)" >&2; exit 3; }
PY="${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}"
VERSION="$("$PY" -c "import tomllib; print(tomllib.load(open('pyproject.toml','rb'))['project']['version'])")"
STAGE="$(mktemp -d)"
trap 'rm -rf "$STAGE"' EXIT
APPDIR="$STAGE/Bitsmith.app"
RES="$APPDIR/Contents/Resources"
mkdir -p "$APPDIR/Contents/MacOS" "$RES/wheels"

bash installers/build_wheel.sh "$RES/wheels" >/dev/null
"$PY" installers/fetch_uv.py macosx_11_0_arm64 "$RES" >/dev/null
cp installers/bootstrap.py installers/versions.env "$RES/"

# Icon: resources/bitsmith.png (256 px) -> Bitsmith.icns
ICONSET="$(mktemp -d)/Bitsmith.iconset"
mkdir -p "$ICONSET"
for s in 16 32 64 128 256; do sips -z $s $s resources/bitsmith.png --out "$ICONSET/icon_${s}x${s}.png" >/dev/null; done
iconutil -c icns "$ICONSET" -o "$RES/Bitsmith.icns"

cat > "$APPDIR/Contents/Info.plist" <<PLIST
<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">
<plist version="1.0"><dict>
  <key>CFBundleName</key><string>Bitsmith</string>
  <key>CFBundleDisplayName</key><string>Bitsmith</string>
  <key>CFBundleIdentifier</key><string>org.bitsmith.app</string>
  <key>CFBundleVersion</key><string>$VERSION</string>
  <key>CFBundleShortVersionString</key><string>$VERSION</string>
  <key>CFBundleExecutable</key><string>Bitsmith</string>
  <key>CFBundleIconFile</key><string>Bitsmith</string>
  <key>CFBundlePackageType</key><string>APPL</string>
  <key>LSMinimumSystemVersion</key><string>13.0</string>
  <key>LSArchitecturePriority</key><array><string>arm64</string></array>
  <key>NSHighResolutionCapable</key><true/>
</dict></plist>
PLIST

# The launcher: install on first start (or after an interrupted one), then start the app.
cat > "$APPDIR/Contents/MacOS/Bitsmith" <<'LAUNCH'
#!/bin/bash
RES="$(cd "$(dirname "$0")/../Resources" && pwd)"
. "$RES/versions.env"
ROOT="${BITSMITH_HOME:-$HOME/Library/Application Support/Bitsmith}"
APP="$ROOT/app"
VERSION="$(cd "$RES/wheels" && ls bitsmith-*.whl | tail -1 | cut -d- -f2)"
# (Re)install on the first start, after an interrupted install, and after an update of the .app (a new
# bootstrap, or a Bitsmith version that install.json does not record yet); otherwise start the app.
if [ ! -f "$APP/install.json" ] || [ -f "$APP/install-incomplete.json" ] || \
   ! cmp -s "$RES/bootstrap.py" "$APP/bootstrap.py" || ! grep -qF "\"bitsmith\": \"$VERSION\"" "$APP/install.json"; then
  mkdir -p "$APP"
  cp "$RES/uv" "$RES/bootstrap.py" "$APP/"
  rm -rf "$APP/wheels"; cp -R "$RES/wheels" "$APP/wheels"
  SCRIPT="$APP/first-start.command"
  cat > "$SCRIPT" <<CMD
#!/bin/bash
export UV_PYTHON_INSTALL_DIR="$APP/python" UV_CACHE_DIR="$APP/uv-cache" UV_NO_CONFIG=1 UV_NO_PROGRESS=1
if ! "$APP/uv" python install $PYTHON_VERSION; then
  echo "Problem: Python could not be downloaded. What to do: connect to the internet and open Bitsmith again."
  read -r -p "Press Enter to close this window."; exit 1
fi
"$APP/uv" run --no-project --managed-python --python $PYTHON_VERSION "$APP/bootstrap.py" install --root "$ROOT" --uv "$APP/uv" --pause --ask && open -a "$RES/../.."
CMD
  chmod +x "$SCRIPT"
  open -a Terminal "$SCRIPT"
  exit 0
fi
exec "$APP/env/bin/python" -m bitsmith.app "$@"
LAUNCH
chmod +x "$APPDIR/Contents/MacOS/Bitsmith"

if [ -n "$SIGN" ]; then
  codesign --force --deep --options runtime --sign "$SIGN" "$APPDIR"
fi
mkdir -p "$OUT"
ln -s /Applications "$STAGE/Applications"
hdiutil create -quiet -volname "Bitsmith $VERSION" -srcfolder "$STAGE" -ov -format UDZO \
  "$OUT/Bitsmith-$VERSION-arm64.dmg"
echo "$OUT/Bitsmith-$VERSION-arm64.dmg"
