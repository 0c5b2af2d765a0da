# Sourced by the scripts in this folder: makes `uv` available and the locked environment current.
# A fresh Debian/Ubuntu machine may have Python without pip or venv; try the gentlest way first.

ensure_uv() {
  if command -v uv >/dev/null 2>&1; then return 0; fi
  export PATH="$HOME/.local/bin:$PATH"
  if command -v uv >/dev/null 2>&1; then return 0; fi
  echo "bootstrap: installing uv (the project's package manager)" >&2
  if python3 -m pip --version >/dev/null 2>&1; then
    python3 -m pip install --user --quiet uv 2>/dev/null \
      || python3 -m pip install --user --quiet --break-system-packages uv
  else
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
      DEBIAN_FRONTEND=noninteractive apt-get update -qq
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-pip python3-venv >/dev/null
      python3 -m pip install --user --quiet --break-system-packages uv 2>/dev/null \
        || python3 -m pip install --user --quiet uv
    else
      echo "bootstrap: need uv or pip; install one (e.g. 'sudo apt-get install python3-pip')" >&2
      return 1
    fi
  fi
  command -v uv >/dev/null 2>&1
}

sync_env() {
  ensure_uv
  uv sync --frozen --quiet
}
