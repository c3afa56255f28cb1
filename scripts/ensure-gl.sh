#!/usr/bin/env bash
# Make headless MuJoCo rendering (videos) work: EGL through Mesa on a machine without a GPU.
# Installs Debian's Mesa EGL packages when they are missing and we may (root + apt); otherwise says what to install.
set -u
if ldconfig -p 2>/dev/null | grep -q 'libEGL_mesa\|libEGL_nvidia'; then exit 0; fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  (apt-get update -qq && apt-get install -y -qq libegl1 libegl-mesa0 libgl1 >/dev/null) && exit 0
fi
echo "note: no EGL library found; videos will be skipped (install libegl1 libegl-mesa0, or set MUJOCO_GL=osmesa)" >&2
exit 0
