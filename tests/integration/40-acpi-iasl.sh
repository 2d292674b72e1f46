# `amalgam topology`: its NUMA view, and the ACPI tables it writes, checked
# against a model of the machine computed here (not read back from amalgam)
# after ACPICA's own disassembler has decoded and checksummed every table;
# and the virtio-mmio devices `--virtio N` puts in the DSDT.
source "$(dirname "$0")/common.bash"

command -v iasl >/dev/null || skip "SKIP: iasl is not installed (apt-get install acpica-tools)"

GIB=$((1 << 30))
LOW_LIMIT=$((3 * GIB))  # the MMIO hole starts here
HIGH_BASE=$((4 * GIB))
ALIGN=$((2 << 20))
declare -a VNODE RANGES
declare -A DIST

# ---- the model: what a configuration must give -------------------------------

# model NODES VCPUS MEM_MB PLACEMENT DISTANCE: sets VNODE[i], RANGES[k]
# ("start:size ..."), DIST[i,j].
model() {
    local k=$1 n=$2 mem=$(($3 << 20)) pl=$4 di=$5 i j
    VNODE=() RANGES=()
    DIST=()
    local list=(${pl//,/ })
    for ((i = 0; i < n; i++)); do
        case $pl in
            round-robin) VNODE[i]=$((i % k)) ;;
            block) VNODE[i]=$((i * k / n)) ;;
            *) VNODE[i]=${list[i]} ;;
        esac
    done
    local vals=(${di//[,;]/ })
    for ((i = 0; i < k; i++)); do
        for ((j = 0; j < k; j++)); do
            if [ "$di" = default ]; then DIST[$i,$j]=$((i == j ? 10 : 20))
            elif [ ${#vals[@]} -eq 1 ]; then DIST[$i,$j]=$((i == j ? 10 : vals[0]))
            else DIST[$i,$j]=${vals[i * k + j]}; fi
        done
    done
    local low=$((mem < LOW_LIMIT ? mem : LOW_LIMIT)) slice=$((mem / k / ALIGN * ALIGN))
    for ((i = 0; i < k; i++)); do
        local a=$((i * slice)) b=$((i == k - 1 ? mem : (i + 1) * slice)) r=""
        if ((a < low)); then r="$a:$(((b < low ? b : low) - a))"; fi
        if ((b > low)); then
            local s=$((a > low ? a : low))
            r="$r $((HIGH_BASE + s - low)):$((b - s))"
        fi
        RANGES[i]=$(echo $r)
    done
}

# ---- the text view -------------------------------------------------------------

check_text() { # name nodes vcpus
    local name=$1 k=$2 n=$3 out="$TMP/view" i j bad=""
    local want_avail="available: $k nodes (0)"
    [ "$k" -gt 1 ] && want_avail="available: $k nodes (0-$((k - 1)))"
    grep -qx "$want_avail" "$out" || bad="$bad available;"
    for ((i = 0; i < k; i++)); do
        local cpus="" bytes=0 r
        for ((j = 0; j < n; j++)); do [ "${VNODE[j]}" -eq $i ] && cpus="$cpus $j"; done
        for r in ${RANGES[i]}; do bytes=$((bytes + ${r#*:})); done
        grep -qx "node $i cpus:$cpus" "$out" || bad="$bad node $i cpus;"
        grep -qx "node $i size: $((bytes >> 20)) MB" "$out" || bad="$bad node $i size;"
        local row
        row=$(printf '%4d:' $i; for ((j = 0; j < k; j++)); do printf '%4d' "${DIST[$i,$j]}"; done)
        grep -qx -- "$row" "$out" || bad="$bad distance row $i;"
    done
    if [ -z "$bad" ]; then ok "$name: topology view"; else fail "$name: view:$bad $(tr '\n' '|' <"$out")"; fi
}

# ---- the tables ------------------------------------------------------------------

# iasl must decode every table without an error, a warning or a bad checksum.
disassemble() { # name dir
    local name=$1 dir=$2 f log
    for f in "$dir"/*.dat; do
        [ "$(basename "$f")" = RSDP.dat ] && continue # see check_rsdp
        log="$f.log"
        if ! iasl -d "$f" >"$log" 2>&1; then
            fail "$name: iasl -d $(basename "$f") failed: $(tr '\n' '|' <"$log")"
        elif grep -qiE 'error|warning|incorrect checksum' "$log" "${f%.dat}.dsl"; then
            fail "$name: iasl on $(basename "$f"): $(grep -hiE 'error|warning|incorrect' "$log" "${f%.dat}.dsl" | tr '\n' '|')"
        elif [ ! -s "${f%.dat}.dsl" ]; then
            fail "$name: iasl wrote no ${f%.dat}.dsl"
        fi
    done
}

# This iasl cannot decode a bare RSDP ("RSD PTR " is no table signature), so
# its fields and both checksums are checked byte by byte.
check_rsdp() { # name dir
    local name=$1 f=$2/RSDP.dat
    local b=($(od -An -v -tu1 "$f")) s20=0 s36=0 i
    for ((i = 0; i < 36 && i < ${#b[@]}; i++)); do
        ((i < 20)) && s20=$((s20 + b[i]))
        s36=$((s36 + b[i]))
    done
    if [ "$(head -c 8 "$f")" != "RSD PTR " ] || [ ${#b[@]} -ne 36 ] || [ "${b[15]}" -ne 2 ] ||
        [ "${b[20]}" -ne 36 ] || ((s20 % 256 || s36 % 256)); then
        fail "$name: RSDP malformed or bad checksum: ${b[*]}"
    fi
}

# Decimal value of a field "Name : HEX" in each subtable of a .dsl, one line
# per subtable of the given type: awk prints "f1 f2 ..." in field order.
subtables() { # dsl type-text field...
    local dsl=$1 type=$2; shift 2
    awk -v type="$type" -v fields="$(IFS='|'; echo "$*")" '
        function flush() { if (inside) { line = ""; for (i = 1; i <= nf; i++)
                               line = line (i > 1 ? " " : "") val[f[i]]; print line }
                           inside = 0; delete val }
        BEGIN { nf = split(fields, f, "|") }
        /Subtable Type :/ { flush(); inside = index($0, "[" type "]") > 0; next }
        inside { for (i = 1; i <= nf; i++) {
                     pat = "] +" f[i] " *: "
                     if (match($0, pat)) { v = substr($0, RSTART + RLENGTH); split(v, w, " ")
                                          val[f[i]] = w[1] } } }
        END { flush() }' "$dsl" | while read -r line; do
        local out="" x
        for x in $line; do out="$out $((16#$x))"; done
        echo $out
    done
}

check_srat() { # name dir nodes vcpus
    local name=$1 dsl=$2/SRAT.dsl k=$3 n=$4 i r want got
    want=$(for ((i = 0; i < n; i++)); do echo "${VNODE[i]} $i 1"; done)
    got=$(subtables "$dsl" "Processor Local APIC/SAPIC Affinity" \
        "Proximity Domain Low\(8\)" "Apic ID" "Flags \(decoded below\)")
    [ "$got" = "$want" ] || fail "$name: SRAT CPUs: want [$want] got [$got]"
    want=$(for ((i = 0; i < k; i++)); do
        for r in ${RANGES[i]}; do echo "$i ${r%%:*} ${r#*:} 1"; done
    done)
    got=$(subtables "$dsl" "Memory Affinity" "Proximity Domain" "Base Address" \
        "Address Length" "Flags \(decoded below\)")
    [ "$got" = "$want" ] || fail "$name: SRAT memory: want [$want] got [$got]"
}

check_slit() { # name dir nodes
    local name=$1 dsl=$2/SLIT.dsl k=$3 i j want got
    got=$(awk -F': ' '/Localities/ { print $2 }' "$dsl")
    [ -n "$got" ] && [ $((16#$got)) -eq "$k" ] || fail "$name: SLIT localities '$got', want $k"
    for ((i = 0; i < k; i++)); do
        want=$(for ((j = 0; j < k; j++)); do printf '%02X ' "${DIST[$i,$j]}"; done)
        got=$(awk -F': ' -v row="$i" '$0 ~ "Locality +" row " :" { print $2 }' "$dsl")
        [ "$got" = "${want% }" ] || fail "$name: SLIT row $i: want '${want% }' got '$got'"
    done
}

check_madt() { # name dir vcpus
    local name=$1 dsl=$2/APIC.dsl n=$3 i want got
    want=$(for ((i = 0; i < n; i++)); do echo "$i $i 1"; done)
    got=$(subtables "$dsl" "Processor Local APIC" "Processor ID" "Local Apic ID" \
        "Flags \(decoded below\)")
    [ "$got" = "$want" ] || fail "$name: MADT local APICs: want [$want] got [$got]"
}

# The rest of the chain: what the XSDT lists, what the FADT points at, _S5.
check_chain() { # name dir
    local name=$1 dir=$2 f
    for f in RSDP XSDT FACP FACS DSDT APIC SRAT SLIT; do
        [ -s "$dir/$f.dat" ] || fail "$name: no $f.dat written"
    done
    [ "$(grep -c 'ACPI Table Address' "$dir/XSDT.dsl")" -eq 4 ] ||
        fail "$name: XSDT should list 4 tables (FACP APIC SRAT SLIT)"
    grep -q 'Name (_S5, Package' "$dir/DSDT.dsl" || fail "$name: DSDT has no _S5"
    # The FACS only through the 64-bit X_FIRMWARE_CTRL (offset 132): a FADT
    # with both set lists it twice; the DSDT through both, equal.
    local facs32 facs64 dsdt32 dsdt64
    facs32=$(awk '/\[024h 0036 +4\] +FACS Address/ { print $NF }' "$dir/FACP.dsl")
    facs64=$(awk '/\[084h 0132 +8\] +FACS Address/ { print $NF }' "$dir/FACP.dsl")
    dsdt32=$(awk '/\[028h 0040 +4\] +DSDT Address/ { print $NF }' "$dir/FACP.dsl")
    dsdt64=$(awk '/\[08Ch 0140 +8\] +DSDT Address/ { print $NF }' "$dir/FACP.dsl")
    [ "$facs32" = 00000000 ] && [ -n "$facs64" ] && ((16#$facs64)) && [ -n "$dsdt32" ] &&
        [ -n "$dsdt64" ] && ((16#$dsdt32 == 16#$dsdt64)) && ((16#$dsdt32)) ||
        fail "$name: FADT pointers: FACS $facs32/$facs64, DSDT $dsdt32/$dsdt64"
}

# ---- the configurations ------------------------------------------------------------

check_config() { # name nodes vcpus mem_mb placement distance
    local name=$1 k=$2 n=$3 mb=$4 pl=$5 di=$6 dir="$TMP/$1" before=$failures
    mkdir -p "$dir"
    local args=(--nodes "$k" --vcpus "$n" --mem "${mb}M" --placement "$pl")
    [ "$di" != default ] && args+=(--distance "$di")
    # On a bad checksum topology still writes the tables and exits 1: check
    # them anyway, so that iasl's own verdict is seen too.
    if ! "$AMALGAM" topology "${args[@]}" --acpi-dir "$dir" >"$TMP/view" 2>"$TMP/err"; then
        fail "$name: amalgam topology ${args[*]}: $(cat "$TMP/err")"
        [ -s "$dir/SRAT.dat" ] || return
    fi
    model "$k" "$n" "$mb" "$pl" "$di"
    check_text "$name" "$k" "$n"
    disassemble "$name" "$dir"
    check_rsdp "$name" "$dir"
    check_chain "$name" "$dir"
    check_srat "$name" "$dir" "$k" "$n"
    check_slit "$name" "$dir" "$k"
    check_madt "$name" "$dir" "$n"
    grep -q LNRO0005 "$dir/DSDT.dsl" && fail "$name: a virtio device in the DSDT without --virtio"
    [ $failures -eq "$before" ] && ok "$name: ${args[*]}: every table decodes and matches"
}

check_config one-node 1 1 64 round-robin default
check_config two-nodes 2 2 256 round-robin default
check_config four-4G-block 4 8 4096 block default
check_config four-5G-block 4 8 5120 block 15
check_config three-matrix 3 6 6144 0,2,1,1,0,2 "10,15,30;15,10,25;30,25,10"
# 4G does not split evenly in three: the last node takes the rest.
check_config three-uneven 3 5 4096 round-robin 12

# The model above mirrors the slicing rule, so the hole is also pinned down
# by hand: with 5G over 4 nodes, node 2 straddles the 3-4 GiB hole.
model 4 8 5120 block 15
[ "${RANGES[2]}" = "$((0xA0000000)):$((0x20000000)) $((0x100000000)):$((0x30000000))" ] &&
    grep -q "00000000A0000000" "$TMP/four-5G-block/SRAT.dsl" &&
    grep -q "0000000100000000" "$TMP/four-5G-block/SRAT.dsl" &&
    ok "node 2 of 4 (5G) straddles the MMIO hole: [2.5G,3G) and [4G,4.75G)" ||
    fail "node 2 of 4 (5G) should have [0xA0000000,+512M) and [0x100000000,+768M): ${RANGES[2]}"

# ---- virtio-mmio devices in the DSDT ------------------------------------------------

# platform.h's layout: slot i at BASE + i * STRIDE, SIZE bytes, GSI GSI_BASE + i.
VIRTIO_BASE=$((0xFEB00000)) VIRTIO_STRIDE=$((0x1000)) VIRTIO_SIZE=$((0x200)) VIRTIO_GSI_BASE=16

# One line per Device in a DSDT.dsl: name, _HID, _UID, _CCA, the
# Memory32Fixed access/base/length and the Interrupt flags/GSI, as iasl
# prints them (integers as Zero, One or hex).
dsdt_devices() { # dsl
    awk 'function flush() { if (dev != "") print dev, hid, uid, cca, acc, base, len, irq, gsi
                            dev = hid = uid = cca = acc = base = len = irq = gsi = "" }
         function after(s, pre) { sub(".*" pre, "", s); return s }
         /Device \(/ { flush(); dev = after($0, "Device \\("); sub(/\).*/, "", dev); next }
         /Name \(_HID, "/ { hid = after($0, "_HID, \""); sub(/".*/, "", hid) }
         /Name \(_UID, / { uid = after($0, "_UID, "); sub(/\).*/, "", uid) }
         /Name \(_CCA, / { cca = after($0, "_CCA, "); sub(/\).*/, "", cca) }
         /Memory32Fixed \(/ { acc = after($0, "Memory32Fixed \\("); sub(/,.*/, "", acc)
                              field = 1; next }
         field == 1 { base = $1; sub(/,/, "", base); field = 2; next }
         field == 2 { len = $1; sub(/,/, "", len); field = 0; next }
         /Interrupt \(/ { irq = after($0, "Interrupt \\("); sub(/, ,.*/, "", irq)
                          gsub(/ /, "", irq); want_gsi = 1; next }
         want_gsi && /0x/ { gsi = $1; sub(/,/, "", gsi); want_gsi = 0 }
         END { flush() }' "$1"
}

int_of() { # Zero, One or 0xHEX as iasl prints it -> decimal
    case $1 in Zero) echo 0 ;; One) echo 1 ;; *) echo $(($1)) ;; esac
}

check_virtio() { # name slots
    local name=$1 n=$2 dir="$TMP/$1" before=$failures i want got
    mkdir -p "$dir"
    if ! "$AMALGAM" topology --virtio "$n" --acpi-dir "$dir" >/dev/null 2>"$TMP/err"; then
        fail "$name: amalgam topology --virtio $n: $(cat "$TMP/err")"
        return
    fi
    disassemble "$name" "$dir"
    check_chain "$name" "$dir"
    grep -q 'Scope (\\_SB)' "$dir/DSDT.dsl" || fail "$name: DSDT has no Scope (\\_SB)"
    want=$(for ((i = 0; i < n; i++)); do
        echo "$(printf 'VR%02d' $i) LNRO0005 $i 1 ReadWrite $((VIRTIO_BASE + i * VIRTIO_STRIDE))" \
            "$VIRTIO_SIZE ResourceConsumer,Level,ActiveHigh,Exclusive $((VIRTIO_GSI_BASE + i))"
    done)
    got=$(dsdt_devices "$dir/DSDT.dsl" | while read -r dev hid uid cca acc base len irq gsi; do
        echo "$dev $hid $(int_of "$uid") $(int_of "$cca") $acc $((base)) $((len)) $irq $((gsi))"
    done)
    [ "$got" = "$want" ] || fail "$name: DSDT devices: want [$want] got [$got]"
    [ $failures -eq "$before" ] && ok "$name: --virtio $n: $n LNRO0005 devices decode and match"
}

# Already one device is longer than 63 bytes: a 2-byte PkgLength.
check_virtio virtio-one 1
check_virtio virtio-three 3
check_virtio virtio-max 8

# --json is one line that names every node.
if "$AMALGAM" topology --nodes 3 --vcpus 6 --mem 6G --json >"$TMP/json" &&
    [ "$(wc -l <"$TMP/json")" -eq 1 ] && grep -q '"node":2,"cpus":\[2,5\],"size_mb":2048' "$TMP/json"; then
    ok "--json: $(cut -c1-80 "$TMP/json")..."
else
    fail "--json: $(cat "$TMP/json")"
fi

# Distances from latencies, without measuring: 10 * 300 / 100 = 30.
if "$AMALGAM" topology --nodes 2 --distance measured --local-latency-ns 100 \
    --remote-latency-ns 300 >"$TMP/m" && grep -qx '   0:  10  30' "$TMP/m"; then
    ok "--distance measured with given latencies gives 30"
else
    fail "--distance measured: $(tr '\n' '|' <"$TMP/m")"
fi

# Measured for real on this host: the fabric ping-pong and a memory probe
# give some distance in 11..254, and --json shows the latencies used. The
# shm ping-pong itself sometimes stalls on a loaded host (as `bench fabric`
# does), hence up to three tries.
for try in 1 2 3; do
    "$AMALGAM" topology --nodes 2 --distance measured --json >"$TMP/mj" 2>"$TMP/err" && break
done
if dist=$(grep -o '"distances":\[10,[0-9]*\]' "$TMP/mj" | grep -o '[0-9]*\]' | tr -d ']') &&
    [ -n "$dist" ] && [ "$dist" -ge 11 ] && [ "$dist" -le 254 ] &&
    grep -q '"remote_latency_ns":[0-9]' "$TMP/mj"; then
    ok "--distance measured: $(grep -o '"local_latency_ns[^}]*remote_latency_ns":[0-9.]*' "$TMP/mj") -> $dist"
else
    fail "--distance measured: $(cat "$TMP/mj" "$TMP/err")"
fi

# Bad input: one line, exit 2.
for bad in "--nodes 0" "--mem 3M" "--nodes 2 --distance 10,20;20" "--nodes 2 --vcpus 2 --placement 0,5" \
    "--nodes 2 --distance 5" "--local-latency-ns 5" "--frobnicate" "--virtio 9" "--virtio -1" \
    "--virtio 2x"; do
    "$AMALGAM" topology $bad >/dev/null 2>"$TMP/err"
    rc=$?
    if [ $rc -eq 2 ] && [ "$(wc -l <"$TMP/err")" -eq 1 ]; then
        ok "refuses '$bad': $(cat "$TMP/err")"
    else
        fail "'$bad': exit $rc, $(cat "$TMP/err")"
    fi
done
"$AMALGAM" topology --acpi-dir "$TMP/nope" >/dev/null 2>"$TMP/err"
rc=$?
[ $rc -eq 1 ] && grep -q "cannot write" "$TMP/err" && ok "missing --acpi-dir: $(cat "$TMP/err")" ||
    fail "missing --acpi-dir: exit $rc, $(cat "$TMP/err")"
finish
