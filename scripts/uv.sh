# Sourced by scripts/bootstrap.sh and scripts/lock.sh: one place that provides uv, the installer and
# resolver of the locked environment (requirements/cpu-py311.lock).
#
# ensure_uv VENV: create the virtualenv VENV if it is missing and install the pinned uv into it from
# requirements/uv.txt (hash-checked), then set UV to its path. Why uv: it resolves for a target Python and
# platform with hashes (`uv pip compile --generate-hashes`), installs a ~200-package lock in seconds where pip
# takes minutes, and is one static binary with no dependencies to drift.
ensure_uv() {
    local venv=$1
    [ -x "$venv/bin/python" ] || "${PYTHON:-python3}" -m venv "$venv"
    UV="$venv/bin/uv"
    local want
    want="$(sed -n 's/^uv==\([^ ]*\).*/\1/p' requirements/uv.txt)"
    if ! [ -x "$UV" ] || [ "$("$UV" --version | cut -d' ' -f2)" != "$want" ]; then
        "$venv/bin/python" -m pip install -q --disable-pip-version-check --require-hashes -r requirements/uv.txt
    fi
}

# uv reads no pip configuration: hand it pip's configured find-links (where a machine keeps wheels on local
# disk, as this workplace keeps its CPU torch) and ABLATE_TORCH_INDEX (e.g.
# https://download.pytorch.org/whl/cpu). Every other package comes from PyPI, whose files the hashes name.
uv_sources() {
    local py=$1 value
    UV_SOURCES=()
    value="$("$py" -m pip config get global.find-links 2>/dev/null || true)"
    for v in $value; do UV_SOURCES+=(--find-links "$v"); done
    if [ -n "${ABLATE_TORCH_INDEX:-}" ]; then UV_SOURCES+=(--extra-index-url "$ABLATE_TORCH_INDEX"); fi
}
