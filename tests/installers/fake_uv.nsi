; A stand-in for uv.exe, so Setup's own steps can run under wine: wine 8 cannot start the real uv.exe (it lacks
; bcryptprimitives.dll) and this machine has no internet for the real Python and PyTorch downloads.
; Built by tests/installers/test_windows_installer.py with makensis into a windowless .exe that
;   - appends its full command line to %FAKE_UV_LOG% (UTF-16LE), so the test sees exactly what Setup passed,
;   - answers `uv python install ...` with success,
;   - answers `uv run ... bootstrap.py install|repair ...` as %FAKE_UV_MODE% says:
;       ok       the environment is "made" (env\Scripts\pythonw.exe) and exit 0
;       nogpu    exit 3 (the GPU cannot be used) unless --allow-cpu was passed, then as ok
;       fail     exit 2 with a problem message
;     each leaving app\last-message.txt (UTF-16 with a byte-order mark) as the bootstrap does.
Unicode true
Target amd64-unicode
SilentInstall silent
RequestExecutionLevel user
OutFile "${OUTFILE}"

!include "LogicLib.nsh"
!include "FileFunc.nsh"
!include "StrFunc.nsh"
${StrStr}

!macro Message TEXT
  FileOpen $9 "$LOCALAPPDATA\Bitsmith\app\last-message.txt" w
  FileWriteWord $9 0xFEFF
  FileWriteUTF16LE $9 "${TEXT}"
  FileClose $9
!macroend

Section
  SetShellVarContext current
  ReadEnvStr $0 FAKE_UV_LOG
  FileOpen $1 "$0" a
  FileSeek $1 0 END
  FileWriteUTF16LE $1 "$CMDLINE$\r$\n"
  FileClose $1

  ${GetParameters} $2
  StrCpy $3 $2 6
  ${If} $3 == "python"
    SetErrorLevel 0
    Quit
  ${EndIf}

  ReadEnvStr $4 FAKE_UV_MODE
  ${StrStr} $5 $2 "--allow-cpu"
  CreateDirectory "$LOCALAPPDATA\Bitsmith\app"
  ${If} $4 == "nogpu"
  ${AndIf} $5 == ""
    !insertmacro Message "Problem: Your NVIDIA driver (566.36) is too old for the PyTorch builds that support NVIDIA GeForce RTX 5090: they need driver 570.65 or newer."
    SetErrorLevel 3
    Quit
  ${EndIf}
  ${If} $4 == "fail"
    !insertmacro Message "Problem: A download failed during this step: Downloading and installing PyTorch."
    SetErrorLevel 2
    Quit
  ${EndIf}
  CreateDirectory "$LOCALAPPDATA\Bitsmith\app\env\Scripts"
  FileOpen $6 "$LOCALAPPDATA\Bitsmith\app\env\Scripts\pythonw.exe" w
  FileWrite $6 "stand-in"
  FileClose $6
  !insertmacro Message "Bitsmith is installed and works."
  SetErrorLevel 0
SectionEnd
