# Sourced by the set-up scripts: they need root (packages, namespaces, cgroups). As root they
# just run; otherwise they re-run themselves through sudo where it exists, or say what to do.
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then
    exec sudo --preserve-env=PATH,CARGO_HOME,RUSTUP_HOME "$0" "$@"
  fi
  echo "$(basename "$0"): needs root, and sudo is not installed: run it as root (su -c '$0')" >&2
  exit 1
fi
