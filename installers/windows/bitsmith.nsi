; Bitsmith for Windows: a per-user installer (no admin rights), built on Linux by installers/windows/build.sh.
; It carries uv.exe, the shared bootstrap and the Bitsmith wheel; the bootstrap fetches a private Python,
; picks the PyTorch build for this PC's NVIDIA GPU and driver, installs into %LOCALAPPDATA%\Bitsmith\app\env
; and checks that the GPU works. Running the installer again finishes an interrupted install or updates an
; older one; models and chats in %LOCALAPPDATA%\Bitsmith are never touched by install, repair or update.
;
; Command line: /S (silent), /ALLOWCPU (install for the CPU when the GPU cannot be used), /BUILD=cu126 (force a
; PyTorch build). When the GPU cannot be used (no driver, driver or GPU too old), Setup shows why and asks whether
; to install for the CPU instead; silent Setup says no unless /ALLOWCPU was given.
; Uninstaller: /S keeps models and chats, /S /REMOVEDATA deletes them too; /repair rebuilds the environment.

; 64-bit: PyTorch and uv exist only for 64-bit Windows, so a 32-bit Windows gets a clear "cannot run" at once.
Target amd64-unicode
Unicode true
ManifestDPIAware true
RequestExecutionLevel user
!ifdef COMPRESSOR
  SetCompressor /SOLID ${COMPRESSOR}
!else
  SetCompressor /SOLID lzma
!endif

!ifndef VERSION | WHEEL | WHEELNAME | UVEXE | BOOTSTRAP | ICON | OUTFILE | PYVER | VIVERSION
  !error "Build with installers/windows/build.sh (it defines VERSION, WHEEL, UVEXE, BOOTSTRAP, ICON, OUTFILE ...)"
!endif

!include "MUI2.nsh"
!include "LogicLib.nsh"
!include "FileFunc.nsh"

!define APPNAME "Bitsmith"
!define UNINSTKEY "Software\Microsoft\Windows\CurrentVersion\Uninstall\Bitsmith"

Name "${APPNAME} ${VERSION}"
OutFile "${OUTFILE}"
InstallDir "$LOCALAPPDATA\Bitsmith\app"
ShowInstDetails show
ShowUninstDetails show
BrandingText "${APPNAME} ${VERSION}"

VIProductVersion "${VIVERSION}"
VIAddVersionKey "ProductName" "${APPNAME}"
VIAddVersionKey "ProductVersion" "${VERSION}"
VIAddVersionKey "FileDescription" "${APPNAME} installer"
VIAddVersionKey "FileVersion" "${VERSION}"
VIAddVersionKey "LegalCopyright" "Apache-2.0"

Var Root        ; %LOCALAPPDATA%\Bitsmith: the app folder (app\) and the user's models and chats
Var ExtraArgs   ; options passed through to the bootstrap
Var Installed   ; 1 once the environment works, so the finish page may start the app
Var KeepData

!define MUI_ICON "${ICON}"
!define MUI_UNICON "${ICON}"
!define MUI_ABORTWARNING
!define MUI_WELCOMEPAGE_TITLE "Install ${APPNAME} ${VERSION}"
!define MUI_WELCOMEPAGE_TEXT "Bitsmith compresses, fine-tunes and chats with language models on your own GPU.$\r$\n$\r$\nSetup finds your graphics card and driver, then downloads the matching PyTorch (about 3 GB for NVIDIA GPUs) into your user folder. No administrator rights are needed. This takes 5 to 20 minutes, depending on your connection.$\r$\n$\r$\nIf the download is interrupted, run Setup again: it continues where it stopped."
!define MUI_FINISHPAGE_RUN
!define MUI_FINISHPAGE_RUN_TEXT "Start Bitsmith"
!define MUI_FINISHPAGE_RUN_FUNCTION LaunchApp
!define MUI_PAGE_CUSTOMFUNCTION_SHOW FinishShow
!insertmacro MUI_PAGE_WELCOME
!insertmacro MUI_PAGE_INSTFILES
!insertmacro MUI_PAGE_FINISH
!insertmacro MUI_UNPAGE_CONFIRM
!insertmacro MUI_UNPAGE_INSTFILES
!insertmacro MUI_LANGUAGE "English"

; uv keeps its Python and its download cache inside app\, and ignores any user configuration.
!macro SetUvEnv
  System::Call 'Kernel32::SetEnvironmentVariable(t "UV_PYTHON_INSTALL_DIR", t "$INSTDIR\python")i'
  System::Call 'Kernel32::SetEnvironmentVariable(t "UV_CACHE_DIR", t "$INSTDIR\uv-cache")i'
  System::Call 'Kernel32::SetEnvironmentVariable(t "UV_NO_CONFIG", t "1")i'
  System::Call 'Kernel32::SetEnvironmentVariable(t "UV_NO_PROGRESS", t "1")i'
  System::Call 'Kernel32::SetEnvironmentVariable(t "PYTHONUTF8", t "1")i'
  System::Call 'Kernel32::SetEnvironmentVariable(t "PYTHONIOENCODING", t "utf-8")i'
!macroend

; Read the bootstrap's last message (UTF-16 text it leaves in app\last-message.txt) into $R8, after PREFIX.
!macro ReadLastMessage PREFIX
  StrCpy $R8 "${PREFIX}"
  ClearErrors
  FileOpen $R9 "$INSTDIR\last-message.txt" r
  ${IfNot} ${Errors}
    FileSeek $R9 2  ; skip the byte-order mark
    ${Do}
      FileReadUTF16LE $R9 $R7
      ${If} ${Errors}
        ${ExitDo}
      ${EndIf}
      StrCpy $R8 "$R8$R7"
    ${Loop}
    FileClose $R9
  ${Else}
    StrCpy $R8 "$R8The details are in the list above."
  ${EndIf}
!macroend

; Show the bootstrap's last message in a message box.
!macro ShowLastMessage FLAGS PREFIX
  !insertmacro ReadLastMessage "${PREFIX}"
  MessageBox ${FLAGS} "$R8" /SD IDOK
!macroend

Function .onInit
  SetShellVarContext current
  StrCpy $Root "$LOCALAPPDATA\Bitsmith"
  StrCpy $Installed 0
  StrCpy $ExtraArgs ""
  ${GetParameters} $R0
  ClearErrors
  ${GetOptions} $R0 "/ALLOWCPU" $R1
  ${IfNot} ${Errors}
    StrCpy $ExtraArgs "$ExtraArgs --allow-cpu"
  ${EndIf}
  ClearErrors
  ${GetOptions} $R0 "/BUILD=" $R1
  ${IfNot} ${Errors}
    StrCpy $ExtraArgs "$ExtraArgs --build $R1"
  ${EndIf}
FunctionEnd

Section "Bitsmith" SecMain
  SetShellVarContext current
  SetOutPath "$INSTDIR"
  File "/oname=uv.exe" "${UVEXE}"
  File "/oname=bootstrap.py" "${BOOTSTRAP}"
  File "/oname=bitsmith.ico" "${ICON}"
  RMDir /r "$INSTDIR\wheels"
  SetOutPath "$INSTDIR\wheels"
  File "${WHEEL}"
  SetOutPath "$INSTDIR"
  WriteUninstaller "$INSTDIR\uninstall.exe"

  ; Registered before the long part, so even a half-finished install can be repaired or removed from Settings.
  WriteRegStr HKCU "${UNINSTKEY}" "DisplayName" "${APPNAME}"
  WriteRegStr HKCU "${UNINSTKEY}" "DisplayVersion" "${VERSION}"
  WriteRegStr HKCU "${UNINSTKEY}" "Publisher" "${APPNAME}"
  WriteRegStr HKCU "${UNINSTKEY}" "DisplayIcon" "$INSTDIR\bitsmith.ico"
  WriteRegStr HKCU "${UNINSTKEY}" "InstallLocation" "$INSTDIR"
  WriteRegStr HKCU "${UNINSTKEY}" "UninstallString" '"$INSTDIR\uninstall.exe"'
  WriteRegStr HKCU "${UNINSTKEY}" "QuietUninstallString" '"$INSTDIR\uninstall.exe" /S'
  WriteRegStr HKCU "${UNINSTKEY}" "ModifyPath" '"$INSTDIR\uninstall.exe" /repair'
  WriteRegDWORD HKCU "${UNINSTKEY}" "EstimatedSize" 6000000
  WriteRegDWORD HKCU "${UNINSTKEY}" "NoRepair" 1

  !insertmacro SetUvEnv
  Delete "$INSTDIR\last-message.txt"
  DetailPrint "Downloading Python ${PYVER} (about 30 MB)..."
  nsExec::ExecToLog '"$INSTDIR\uv.exe" python install ${PYVER}'
  Pop $0
  ${If} $0 != 0
    MessageBox MB_ICONSTOP "Setup could not download Python ${PYVER} (result: $0).$\r$\n$\r$\nCheck your internet connection, then run Setup again. If your antivirus blocked uv.exe, allow it first." /SD IDOK
    Abort
  ${EndIf}
  DetailPrint "Finding your GPU, then downloading the matching PyTorch (progress follows)..."
  bootstrap:
  nsExec::ExecToLog '"$INSTDIR\uv.exe" run --no-project --managed-python --python ${PYVER} "$INSTDIR\bootstrap.py" install --root "$Root" --uv "$INSTDIR\uv.exe" --wheel "$INSTDIR\wheels\${WHEELNAME}"$ExtraArgs'
  Pop $0
  ${If} $0 == "error"
    MessageBox MB_ICONSTOP "Setup could not start its helper program (uv.exe). Your antivirus may have blocked it; allow it and run Setup again." /SD IDOK
    Abort
  ${ElseIf} $0 == 3
    ; The GPU cannot be used (no driver, driver or GPU too old); nothing was installed yet. Ask before a CPU install.
    !insertmacro ReadLastMessage ""
    MessageBox MB_YESNO|MB_ICONEXCLAMATION|MB_DEFBUTTON2 "$R8$\r$\n$\r$\nInstall Bitsmith for the CPU instead? It works, but large models are much slower. After fixing the driver, run Setup again to switch to the GPU." /SD IDNO IDYES cpu
    DetailPrint "Setup stopped: the GPU cannot be used. Fix the problem above, then run Setup again."
    Abort
    cpu:
    DetailPrint "Installing for the CPU, as you chose."
    StrCpy $ExtraArgs "$ExtraArgs --allow-cpu"
    Goto bootstrap
  ${ElseIf} $0 != 0
  ${AndIf} $0 != 1
    !insertmacro ShowLastMessage "MB_ICONSTOP" "Bitsmith could not be installed.$\r$\n$\r$\n"
    DetailPrint "Setup stopped. Run it again after fixing the problem above; it continues where it stopped."
    Abort
  ${EndIf}
  ${If} $0 == 1
    !insertmacro ShowLastMessage "MB_ICONEXCLAMATION" ""
  ${EndIf}
  StrCpy $Installed 1

  ; The app starts with pythonw.exe: no console window.
  SetOutPath "$Root"
  CreateDirectory "$SMPROGRAMS\${APPNAME}"
  CreateShortcut "$SMPROGRAMS\${APPNAME}\${APPNAME}.lnk" "$INSTDIR\env\Scripts\pythonw.exe" "-m bitsmith.app" "$INSTDIR\bitsmith.ico" 0
  CreateShortcut "$SMPROGRAMS\${APPNAME}\Repair ${APPNAME}.lnk" "$INSTDIR\uninstall.exe" "/repair" "$INSTDIR\bitsmith.ico" 0
  CreateShortcut "$SMPROGRAMS\${APPNAME}\Uninstall ${APPNAME}.lnk" "$INSTDIR\uninstall.exe" "" "$INSTDIR\bitsmith.ico" 0
  CreateShortcut "$DESKTOP\${APPNAME}.lnk" "$INSTDIR\env\Scripts\pythonw.exe" "-m bitsmith.app" "$INSTDIR\bitsmith.ico" 0
SectionEnd

Function FinishShow
  ${If} $Installed != 1
    SendMessage $mui.FinishPage.Run ${BM_SETCHECK} 0 0
    EnableWindow $mui.FinishPage.Run 0
  ${EndIf}
FunctionEnd

Function LaunchApp
  Exec '"$INSTDIR\env\Scripts\pythonw.exe" -m bitsmith.app'
FunctionEnd

; ------------------------------------------------------------------------------------------------ uninstaller

Function un.onInit
  SetShellVarContext current
  ${GetParameters} $R0
  ClearErrors
  ${GetOptions} $R0 "/repair" $R1
  ${IfNot} ${Errors}
    ; Repair: rebuild the environment in a console window that shows progress; models and chats stay.
    !insertmacro SetUvEnv
    ${GetParent} "$INSTDIR" $R2
    ExecWait '"$INSTDIR\uv.exe" run --no-project --managed-python --python ${PYVER} "$INSTDIR\bootstrap.py" repair --root "$R2" --uv "$INSTDIR\uv.exe" --pause --ask' $R3
    Quit
  ${EndIf}
FunctionEnd

Section "Uninstall"
  SetShellVarContext current
  ${GetParent} "$INSTDIR" $R0
  StrCpy $KeepData 1
  ${GetParameters} $R2
  ClearErrors
  ${GetOptions} $R2 "/REMOVEDATA" $R3
  ${IfNot} ${Errors}
  ${AndIf} ${Silent}
    StrCpy $KeepData 0
    Goto keep
  ${EndIf}
  MessageBox MB_YESNO|MB_ICONQUESTION "Keep your models and chats?$\r$\n$\r$\nYes: they stay in $R0, and installing Bitsmith again finds them.$\r$\nNo: delete them as well." /SD IDYES IDYES keep
    StrCpy $KeepData 0
  keep:
  Delete "$SMPROGRAMS\${APPNAME}\${APPNAME}.lnk"
  Delete "$SMPROGRAMS\${APPNAME}\Repair ${APPNAME}.lnk"
  Delete "$SMPROGRAMS\${APPNAME}\Uninstall ${APPNAME}.lnk"
  RMDir "$SMPROGRAMS\${APPNAME}"
  Delete "$DESKTOP\${APPNAME}.lnk"
  DeleteRegKey HKCU "${UNINSTKEY}"
  RMDir /r "$INSTDIR"
  ${If} ${FileExists} "$INSTDIR\*.*"
    MessageBox MB_ICONEXCLAMATION "Some Bitsmith files are in use and were not removed ($INSTDIR). Close Bitsmith, then delete that folder or run the uninstaller again." /SD IDOK
  ${EndIf}
  ${GetFileName} "$R0" $R1
  ${If} $KeepData == 0
  ${AndIf} $R1 == "Bitsmith"
    RMDir /r "$R0"
  ${Else}
    RMDir "$R0"  ; only when nothing is left in it
  ${EndIf}
SectionEnd
