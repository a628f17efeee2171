#!/usr/bin/env bash
# System services the integration tests need, installed and started on this machine:
# - PostgreSQL on 127.0.0.1 (two sweep workers sharing one Optuna study);
# - Chromium + ChromeDriver (the HTML report is tested in a real headless browser).
# Prints the variables to export; use as: eval "$(bash scripts/ci-services.sh)"
set -euo pipefail
cd /  # the postgres user cannot enter the checkout
need=()
command -v pg_ctlcluster >/dev/null 2>&1 || need+=(postgresql)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v chromedriver >/dev/null 2>&1 || need+=(chromium-driver)
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >&2
fi
version=$(ls /usr/lib/postgresql | sort -n | tail -1)
pg_lsclusters -h | grep -q "^$version main" || pg_createcluster "$version" main >&2
pg_ctlcluster "$version" main start >&2 2>/dev/null || true
for _ in $(seq 30); do pg_isready -q -h 127.0.0.1 && break; sleep 1; done
su postgres -c "psql -q -tAc \"SELECT 1 FROM pg_roles WHERE rolname='inertia'\"" | grep -q 1 ||
  su postgres -c "psql -q -c \"CREATE ROLE inertia LOGIN SUPERUSER PASSWORD 'inertia'\"" >&2
echo "export INERTIA_TEST_POSTGRES=postgresql://inertia:inertia@127.0.0.1:5432/postgres"
echo "export INERTIA_CHROMIUM=$(command -v chromium)"
echo "export INERTIA_CHROMEDRIVER=$(command -v chromedriver)"
