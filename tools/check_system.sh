#!/usr/bin/env bash
# Checks the system packages the napari GUI tests need (Xvfb and GL/xcb libraries); says how to install them.
missing=()
command -v Xvfb >/dev/null 2>&1 || missing+=("xvfb (the Xvfb binary)")
for lib in libGL.so.1 libEGL.so.1 libxkbcommon-x11.so.0 libdbus-1.so.3 libfontconfig.so.1 \
           libxcb-icccm.so.4 libxcb-image.so.0 libxcb-keysyms.so.1 libxcb-randr.so.0 \
           libxcb-render-util.so.0 libxcb-xinerama.so.0 libxcb-xfixes.so.0 libxcb-shape.so.0 \
           libxcb-xkb.so.1 libxcb-cursor.so.0; do
  ldconfig -p 2>/dev/null | grep -q "$lib" || missing+=("$lib")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "Missing system packages for the headless napari tests: ${missing[*]}" >&2
  echo "Install them (Debian/Ubuntu) with:" >&2
  echo "  sudo apt-get update && sudo apt-get install -y --no-install-recommends xvfb xauth libgl1 libegl1 \\" >&2
  echo "    libgl1-mesa-dri libglx-mesa0 libxkbcommon-x11-0 libdbus-1-3 libfontconfig1 fonts-dejavu-core \\" >&2
  echo "    libxcb-icccm4 libxcb-image0 libxcb-keysyms1 libxcb-randr0 libxcb-render-util0 libxcb-xinerama0 \\" >&2
  echo "    libxcb-xfixes0 libxcb-shape0 libxcb-xkb1 libxcb-cursor0" >&2
  exit 1
fi
