#!/usr/bin/env bash
# Shared helpers for the scripts in this directory. Source it, do not run it:
#   # shellcheck source=scripts/lib.sh
#   . "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# After sourcing, M2M_ROOT is the absolute path of the repository root.

if [[ -n "${M2M_LIB_LOADED:-}" ]]; then
    return 0
fi
M2M_LIB_LOADED=1

M2M_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
export M2M_ROOT

# Messages go to stderr so that stdout stays free for data (conninfo lines...).
m2m_prog="$(basename "${0:-m2m}")"
m2m_info() { printf '%s: %s\n' "$m2m_prog" "$*" >&2; }
m2m_warn() { printf '%s: warning: %s\n' "$m2m_prog" "$*" >&2; }
m2m_die() {
    printf '%s: error: %s\n' "$m2m_prog" "$*" >&2
    exit 1
}
m2m_header() { printf '\n==> %s\n' "$*"; }

m2m_require_root() {
    if [[ "$(id -u)" -ne 0 ]]; then
        m2m_die "must run as root (it uses runuser and apt-get)"
    fi
}

# Absolute path without requiring it to exist.
m2m_abspath() {
    realpath -m -- "$1"
}

# m2m_render TEMPLATE OUTPUT NAME=VALUE... [+SECTION | -SECTION]...
# Replaces every {{NAME}} with VALUE (literal text, no escaping applied) and
# keeps (+SECTION) or drops (-SECTION) the lines between the marker lines
# "#{{#SECTION}}" and "#{{/SECTION}}" (the marker lines themselves are always
# removed). Unknown {{NAME}} placeholders are an error. Writes atomically.
m2m_render() {
    local template="$1" out="$2"
    shift 2
    [[ -f "$template" ]] || m2m_die "template not found: $template"
    local -a vars=() keep=() drop=()
    local arg
    for arg in "$@"; do
        case "$arg" in
        +*) keep+=("${arg#+}") ;;
        -*) drop+=("${arg#-}") ;;
        *=*) vars+=("$arg") ;;
        *) m2m_die "m2m_render: bad argument: $arg" ;;
        esac
    done
    local tmp
    tmp="$(mktemp "${out}.XXXXXX")"
    # Values travel through the environment (M2M_R_<NAME>) so that awk never
    # interprets backslashes or ampersands in them.
    if ! (
        for arg in "${vars[@]}"; do
            export "M2M_R_${arg%%=*}=${arg#*=}"
        done
        M2M_R_KEEP=" ${keep[*]} " M2M_R_DROP=" ${drop[*]} " awk '
            function fail(msg) { print "render: " FILENAME ":" FNR ": " msg > "/dev/stderr"; bad = 1; exit 1 }
            /^[ \t]*#\{\{#[A-Za-z0-9_]+\}\}[ \t]*$/ {
                s = $0; gsub(/[ \t#{}]/, "", s)
                if (index(ENVIRON["M2M_R_KEEP"], " " s " ")) { stack[++depth] = 1 }
                else if (index(ENVIRON["M2M_R_DROP"], " " s " ")) { stack[++depth] = 0 }
                else fail("section " s " neither kept nor dropped")
                next
            }
            /^[ \t]*#\{\{\/[A-Za-z0-9_]+\}\}[ \t]*$/ {
                if (depth == 0) fail("unbalanced section end")
                depth--; next
            }
            {
                for (i = 1; i <= depth; i++) if (!stack[i]) next
                line = $0; res = ""
                while (match(line, /\{\{[A-Za-z0-9_]+\}\}/)) {
                    name = substr(line, RSTART + 2, RLENGTH - 4)
                    if (!(("M2M_R_" name) in ENVIRON)) fail("no value for {{" name "}}")
                    res = res substr(line, 1, RSTART - 1) ENVIRON["M2M_R_" name]
                    line = substr(line, RSTART + RLENGTH)
                }
                print res line
            }
            END { if (!bad && depth != 0) { print "render: unterminated section" > "/dev/stderr"; exit 1 } }
        ' "$template" >"$tmp"
    ); then
        rm -f -- "$tmp"
        m2m_die "could not render $template"
    fi
    chmod 0644 "$tmp"
    mv -f -- "$tmp" "$out"
}

# HOST:PORT validation for addresses written into configuration files.
m2m_check_hostport() {
    local what="$1" value="$2"
    if ! [[ "$value" =~ ^([A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\]):([0-9]{1,5})$ ]] ||
        ((10#${BASH_REMATCH[2]} < 1 || 10#${BASH_REMATCH[2]} > 65535)); then
        m2m_die "$what: expected HOST:PORT, got '$value'"
    fi
}

# Print the comment block at the top of FILE (after the #! line) as usage text.
m2m_usage() {
    awk 'NR == 1 { next } /^#/ { sub(/^# ?/, ""); print; next } { exit }' "$1"
}
