#!/usr/bin/env bash
# compat: python3 running python_workload.py, once with pymalloc (arenas from malloc) and
# once with PYTHONMALLOC=malloc (every object through malloc/free). Args: HAKMEM_LIB PYTHON3
here="$(cd "$(dirname "$0")" && pwd)"
source "$here/lib.sh" "$1"
py="$2"
compat_both python "$py" "$here/python_workload.py"
compat_both python-malloc env PYTHONMALLOC=malloc "$py" "$here/python_workload.py"
