# bash completion for hakctl. Words come from hakctl itself (`hakctl __complete ...`), so
# commands, flags and knob names are never listed twice; pids come from the running hakmemd.
_hakctl() {
  local cur prev cmd="" i
  COMPREPLY=()
  cur="${COMP_WORDS[COMP_CWORD]}"
  prev="${COMP_WORDS[COMP_CWORD-1]}"
  local socket_args=()
  for ((i = 1; i < COMP_CWORD; i++)); do
    case "${COMP_WORDS[i]}" in
      --socket) socket_args=(--socket "${COMP_WORDS[i+1]}") ;;
      --socket=*) socket_args=("${COMP_WORDS[i]}") ;;
      -*) ;;
      *) if [[ -z "$cmd" && "${COMP_WORDS[i-1]}" != --socket && "${COMP_WORDS[i-1]}" != --timeout ]]; then
           cmd="${COMP_WORDS[i]}"
         fi ;;
    esac
  done

  case "$prev" in
    --socket) COMPREPLY=($(compgen -f -- "$cur")); return ;;
    --pid|-p) COMPREPLY=($(compgen -W "$(hakctl __complete pids "${socket_args[@]}" 2>/dev/null)" -- "$cur")); return ;;
    --tier) COMPREPLY=($(compgen -W "tiny pool bundle whale" -- "$cur")); return ;;
    --timeout|--count|--wait|--watch|-w) return ;;
  esac

  if [[ -z "$cmd" ]]; then
    if [[ "$cur" == -* ]]; then
      COMPREPLY=($(compgen -W "$(hakctl __complete flags 2>/dev/null)" -- "$cur"))
    else
      COMPREPLY=($(compgen -W "$(hakctl __complete commands 2>/dev/null)" -- "$cur"))
    fi
    return
  fi
  if [[ "$cur" == -* ]]; then
    COMPREPLY=($(compgen -W "$(hakctl __complete flags "$cmd" 2>/dev/null)" -- "$cur"))
    return
  fi
  case "$cmd" in
    help) COMPREPLY=($(compgen -W "$(hakctl __complete commands 2>/dev/null)" -- "$cur")) ;;
    get) COMPREPLY=($(compgen -W "$(hakctl __complete knobs 2>/dev/null)" -- "$cur")) ;;
    rules) [[ "$prev" == rules ]] && COMPREPLY=($(compgen -W "add list del" -- "$cur")) ;;
    set)
      compopt -o nospace 2>/dev/null || true
      local k
      COMPREPLY=()
      for k in $(hakctl __complete knobs --live 2>/dev/null); do
        [[ "$k=" == "$cur"* ]] && COMPREPLY+=("$k=")
      done ;;
  esac
}
complete -F _hakctl hakctl
