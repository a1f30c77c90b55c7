# shellcheck shell=bash
# Shared by bench/run-*: one benchmark run in the benchmark VM (trixie, 4 vCPUs, isolcpus=2-3, with
# Prometheus and node_exporter installed but stopped), with the packages under test installed.
# Sourced after dev/common.sh.

# vm_bench OUT TIMEOUT GUEST_COMMAND FILE...: FILEs (the .deb files among them are installed) go to
# /mnt/host/files; the JSON GUEST_COMMAND prints is kept in OUT with the commit, machine and date.
vm_bench() {
  local out=$1 timeout=$2 command=$3 f
  shift 3
  local files=() log
  log="$BUILD/$(basename "$out" .json).log"
  for f in "$@"; do files+=(--file "$f"); done
  mkdir -p "$BUILD"
  # The guest's whole output is kept: a failed run of many minutes must say why.
  if ! python3 tests/vm/testbed.py run --suite trixie --package prometheus --package prometheus-node-exporter \
    --cpus 4 --append isolcpus=2-3 "${files[@]}" --timeout "$timeout" -- \
    'systemctl disable --now prometheus.service prometheus-node-exporter.service "prometheus-node-exporter-*.timer" >/dev/null 2>&1; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq /mnt/host/files/*.deb >/dev/null 2>&1; '"$command" \
    > "$log"; then
    tail -40 "$log" >&2
    echo "$(basename "$0"): the VM run failed; its whole output: $log" >&2
    return 1
  fi
  sed -n '/^{/,/^}/p' "$log" > "$out.tmp"
  python3 - "$out.tmp" "$out" "$(git -C "$ROOT" rev-parse --short HEAD)" <<'PY'
import json, sys, platform, datetime
data = json.load(open(sys.argv[1]))
data["code"] = f"commit {sys.argv[3]}"
data["vm"] = {"suite": "trixie", "vcpus": 4, "isolcpus": "2-3", "accelerator": "TCG (software emulation)"}
data["host"] = {"machine": platform.machine(), "date": datetime.date.today().isoformat()}
json.dump(data, open(sys.argv[2], "w"), indent=2)
PY
  rm -f "$out.tmp"
  cat "$out"
}
