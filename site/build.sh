#!/usr/bin/env bash
# Build the klviz website into site/_build/html/ from the saved notebooks (nothing is re-executed), offline
# apart from the package registries: Python packages from PyPI (site/requirements.txt with the runtime pins of
# requirements.txt, into site/.venv, once), MathJax from the npm registry (pinned version and checksum, once).
#
#   bash site/build.sh            # then open site/_build/html/index.html, or
#   python -m http.server -d site/_build/html 8000
#
# Environment: PYTHON (default python3) makes the venv; KLVIZ_SITE_VENV (default site/.venv) is where it goes.
# A notebook notebooks/NN_*.ipynb is picked up by itself (site/index.md globs them); a new public name of
# klviz by itself too (site/stage.py reads klviz/__init__.py). Nothing under site/_build is committed.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$EPOCHREALTIME

VENV="${KLVIZ_SITE_VENV:-site/.venv}"
BUILD=site/_build
MATHJAX_VERSION=3.2.2
MATHJAX_SHA512="Bt+SSVU8eBG27zChVewOicYs7Xsdt40qm4+UpHyX7k0/O9NliPc+x77k1/FEsPsjKPZGJvtRZM1vO+geW0OhGw=="

# 1. The build tools, pinned, in their own venv (reinstalled when a requirements file changes).
stamp="$(cat requirements.txt site/requirements.txt | sha256sum | cut -d' ' -f1)"
if [[ ! -x "$VENV/bin/python" || "$(cat "$VENV/.klviz-site-stamp" 2>/dev/null)" != "$stamp" ]]; then
  echo "site: installing the pinned build tools into $VENV"
  "${PYTHON:-python3}" -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --upgrade pip
  "$VENV/bin/python" -m pip install -q -r requirements.txt -r site/requirements.txt
  "$VENV/bin/python" -m pip check
  echo "$stamp" > "$VENV/.klviz-site-stamp"
fi

# 2. MathJax, served from the site itself: the npm registry's tarball, checked against the pinned checksum.
mkdir -p "$BUILD/cache"
tarball="$BUILD/cache/mathjax-$MATHJAX_VERSION.tgz"
if [[ ! -f "$tarball" ]]; then
  command -v npm >/dev/null || { echo "site: npm is needed once to fetch MathJax (apt-get install npm)" >&2; exit 1; }
  (cd "$BUILD/cache" && npm pack --silent "mathjax@$MATHJAX_VERSION" >/dev/null)
fi
actual="$("$VENV/bin/python" -c 'import base64, hashlib, sys
print(base64.b64encode(hashlib.sha512(open(sys.argv[1], "rb").read()).digest()).decode())' "$tarball")"
if [[ "$actual" != "$MATHJAX_SHA512" ]]; then
  rm -f "$tarball"
  echo "site: $tarball does not match the pinned sha512 (removed; run again)" >&2
  exit 1
fi
vendor="$BUILD/vendor/mathjax"
if [[ ! -f "$vendor/.version" || "$(cat "$vendor/.version")" != "$MATHJAX_VERSION" ]]; then
  rm -rf "$vendor" "$BUILD/cache/mathjax"
  mkdir -p "$vendor" "$BUILD/cache/mathjax"
  tar -xzf "$tarball" -C "$BUILD/cache/mathjax"
  # The TeX-to-HTML component, the TeX extensions it loads on demand, its fonts, the menu and its
  # accessibility helpers; not the other combined builds or the speech rule engine's 4 MB of maps.
  es5="$BUILD/cache/mathjax/package/es5"
  cp "$es5/tex-chtml.js" "$vendor/"
  for part in input/tex/extensions output/chtml a11y ui adaptors; do
    mkdir -p "$vendor/$part" && cp -r "$es5/$part/." "$vendor/$part/"
  done
  cp "$BUILD/cache/mathjax/package/LICENSE" "$vendor/"
  rm -rf "$BUILD/cache/mathjax"
  echo "$MATHJAX_VERSION" > "$vendor/.version"
fi

# 3. The source tree (notebooks as saved, the landing page, the API page) and the site.
"$VENV/bin/python" site/stage.py
"$VENV/bin/python" -m sphinx -b html -q -c site -d "$BUILD/doctrees" -w "$BUILD/warnings.txt" \
  "$BUILD/src" "$BUILD/html"
rm -f "$BUILD/html/_static/mathjax/.version"

pages=$(find "$BUILD/html" -name '*.html' -not -path '*/_static/*' | wc -l)
warnings=$(grep -c 'WARNING\|ERROR' "$BUILD/warnings.txt" || true)
size=$(du -sh "$BUILD/html" | cut -f1)
seconds="$("$VENV/bin/python" -c 'import sys, time; print(f"{time.time() - float(sys.argv[1]):.1f}")' "$start")"
echo "site: $pages pages ($size) in $BUILD/html in $seconds s; $warnings Sphinx warnings ($BUILD/warnings.txt)"
