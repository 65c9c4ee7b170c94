#!/usr/bin/env bash
# Peak resident memory of every process while one large attachment (200 MiB
# by default) goes from agency 000.00.00.H37 (province node) to
# 000.00.00.G22 (ministry node) through the hub, each of them a separate
# process started from the files `truc demo` lays out.
#
# Builds nothing: it runs target/release/truc (build it first with
# `cargo build --release -p truc-cli`). Everything goes in a temporary
# directory, removed at the end, along with every process it started.
#
# Environment: TRUC (the binary; default target/release/truc),
# SIZE_MIB (default 200), KEEP=1 to keep the temporary directory.

set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
TRUC=${TRUC:-$ROOT/target/release/truc}
SIZE_MIB=${SIZE_MIB:-200}
H37=000.00.00.H37
G22=000.00.00.G22

if [[ ! -x $TRUC ]]; then
    echo "attachment-rss.sh: $TRUC not found; build it first: cargo build --release -p truc-cli" >&2
    exit 2
fi

TMP=$(mktemp -d "${TMPDIR:-/tmp}/truc-rss.XXXXXX")
DATA=$TMP/data
LOGS=$TMP/logs
mkdir -p "$LOGS"
declare -A PID=()

cleanup() {
    local status=$?
    for name in "${!PID[@]}"; do
        kill "${PID[$name]}" 2>/dev/null || true
    done
    for name in "${!PID[@]}"; do
        wait "${PID[$name]}" 2>/dev/null || true
    done
    if [[ $status -ne 0 ]]; then
        echo "attachment-rss.sh: failed (status $status); last lines of the logs:" >&2
        for f in "$LOGS"/*.log; do
            [[ -s $f ]] || continue
            echo "--- $f" >&2
            tail -n 5 "$f" >&2
        done
    fi
    if [[ ${KEEP:-0} == 1 ]]; then
        echo "kept $TMP"
    else
        rm -rf "$TMP"
    fi
}
trap cleanup EXIT

truc() { "$TRUC" --log-level=warn "$@"; }

kib_to_mib() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }

# A /proc/PID/status field, in kB (empty if the process is gone).
proc_kb() { awk -v f="$2:" '$1 == f { print $2 }' "/proc/$1/status" 2>/dev/null || true; }

# Runs a command and writes its peak resident set size (kB) to the file $1:
# with /usr/bin/time -v when there is one, otherwise by sampling VmHWM
# every 50 ms.
TIME_BIN=$(command -v /usr/bin/time || true)
run_measured() {
    local out=$1
    shift
    if [[ -n $TIME_BIN ]]; then
        "$TIME_BIN" -v -o "$out.time" "$@"
        awk -F': *' '/Maximum resident set size/ { print $2 }' "$out.time" >"$out"
    else
        "$@" &
        local pid=$! peak=0 v
        while kill -0 "$pid" 2>/dev/null; do
            v=$(proc_kb "$pid" VmHWM)
            [[ -n $v && $v -gt $peak ]] && peak=$v
            sleep 0.05
        done
        wait "$pid"
        echo "$peak" >"$out"
    fi
}

now() { date +%s.%N; }
seconds() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'; }

echo "attachment-rss.sh: $SIZE_MIB MiB attachment, $H37 -> $G22, hub and nodes as separate processes"
echo "machine: nproc $(nproc), CPU $(awk -F': *' '/^model name/ { print $2; exit }' /proc/cpuinfo)"
echo "binary: $TRUC"
echo "peak resident memory: $([[ -n $TIME_BIN ]] && echo "/usr/bin/time -v for truc send and truc fetch" || echo "VmHWM sampled every 50 ms for truc send and truc fetch"); VmHWM from /proc for the servers"

truc demo --data "$DATA" --duration 0 --calls 0 >"$LOGS/demo.log" 2>&1
# The first `address` in a node config is the hub's; the backend's is the last.
BACKEND_ADDR=$(sed -n 's/^address = "\(.*\)"$/\1/p' "$DATA/node-vpcp.toml" | tail -n 1)
PROVINCE_CLIENT=$DATA/client-langson-dms.toml
MINISTRY_CLIENT=$DATA/client-vpcp-dms.toml

# "$TRUC" itself, not the truc function: $! must be the server's own pid.
"$TRUC" --log-level=warn hub --config "$DATA/hub.toml" >"$LOGS/hub.log" 2>&1 &
PID[hub]=$!
"$TRUC" --log-level=warn node --config "$DATA/node-lgsp-langson.toml" >"$LOGS/province.log" 2>&1 &
PID[province]=$!
"$TRUC" --log-level=warn node --config "$DATA/node-vpcp.toml" >"$LOGS/ministry.log" 2>&1 &
PID[ministry]=$!
"$TRUC" --log-level=warn demo-backend --listen "$BACKEND_ADDR" >"$LOGS/backend.log" 2>&1 &
PID[backend]=$!

# Both nodes answer their agency systems (30 s at most).
for i in $(seq 300); do
    if truc inbox --config "$PROVINCE_CLIENT" --as "$H37" >/dev/null 2>&1 &&
        truc inbox --config "$MINISTRY_CLIENT" --as "$G22" >/dev/null 2>&1; then
        break
    fi
    if [[ $i -eq 300 ]]; then
        echo "the nodes did not come up within 30 s" >&2
        exit 1
    fi
    sleep 0.1
done
for name in hub province ministry backend; do
    kill -0 "${PID[$name]}" 2>/dev/null || { echo "$name exited at start" >&2; exit 1; }
done

FILE=$TMP/attachment.bin
head -c "${SIZE_MIB}M" /dev/urandom >"$FILE"

DATE=$(date -u +%Y/%m/%d)
NUMBER=rss$(date +%s)
DOC_ID="$H37,$DATE,$NUMBER/BENCH"

t0=$(now)
run_measured "$TMP/send.peak" "$TRUC" --log-level=warn send --config "$PROVINCE_CLIENT" --as "$H37" \
    --to "$G22" --subject "attachment-rss.sh: $SIZE_MIB MiB" --date "$DATE" --number "$NUMBER" \
    --notation BENCH --attach "$FILE" >"$LOGS/send.log" 2>&1
t_sent=$(now)

# Poll the sender's tracking until G22 is at 01 (10 minutes at most).
deadline=$(($(date +%s) + 600))
until truc track --config "$PROVINCE_CLIENT" --as "$H37" --document-id "$DOC_ID" 2>"$LOGS/track.log" |
    awk -v r="$G22" '$1 == r && $4 == "01" { found = 1 } END { exit !found }'; do
    if [[ $(date +%s) -gt $deadline ]]; then
        echo "no 01 for $G22 within 10 minutes" >&2
        exit 1
    fi
    sleep 0.1
done
t_01=$(now)

run_measured "$TMP/fetch.peak" "$TRUC" --log-level=warn fetch --config "$MINISTRY_CLIENT" --as "$G22" \
    --from "$H37" --document-id "$DOC_ID" --out "$TMP/fetched" >"$LOGS/fetch.log" 2>&1
t_fetched=$(now)
cmp "$FILE" "$TMP/fetched/attachment.bin"

echo
echo "document $DOC_ID: sent and fetched back identical (cmp)"
echo "  truc send: $(seconds "$t0" "$t_sent") s; 01 seen $(seconds "$t0" "$t_01") s after the send started (polling truc track every 0.1 s); truc fetch: $(seconds "$t_01" "$t_fetched") s"
echo
printf '%-28s %14s %14s\n' "process" "peak RSS MiB" "RSS now MiB"
for name in hub province ministry; do
    case $name in
        hub) label="truc hub" ;;
        province) label="truc node (lgsp-langson)" ;;
        ministry) label="truc node (vpcp)" ;;
    esac
    hwm=$(proc_kb "${PID[$name]}" VmHWM)
    rss=$(proc_kb "${PID[$name]}" VmRSS)
    if [[ -z $hwm ]]; then
        echo "$label exited" >&2
        exit 1
    fi
    printf '%-28s %14s %14s\n' "$label" "$(kib_to_mib "$hwm")" "$(kib_to_mib "$rss")"
done
printf '%-28s %14s %14s\n' "truc send" "$(kib_to_mib "$(cat "$TMP/send.peak")")" "-"
printf '%-28s %14s %14s\n' "truc fetch" "$(kib_to_mib "$(cat "$TMP/fetch.peak")")" "-"
echo "(peak = VmHWM, the process's high-water resident set; RSS now = VmRSS after the fetch)"
