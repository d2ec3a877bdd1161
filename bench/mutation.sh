#!/usr/bin/env bash
# Mutation testing of the numerical core (issue 13), outside the default test suite.
#
#   bash bench/mutation.sh                 # every module of [tool.mutmut] in pyproject.toml
#   bash bench/mutation.sh "landscape.*"   # only the mutants whose names match
#
# mutmut (https://mutmut.readthedocs.io) rewrites each function of the listed modules many
# times (a flipped sign, an off-by-one bound, a dropped argument...) and runs the tests that
# cover the function against each version; a mutant the tests do not notice "survives".
# The run happens in a scratch clone ($MUTATION_DIR, default bench/.mutation, gitignored) so
# the working tree is never touched; rerunning in the same folder resumes where it stopped.
# At the end bench/mutation_scores.py prints the score per module:
#   score = (killed + timeout) / checked mutants.
# `cd $MUTATION_DIR/p && mutmut show NAME` shows a survivor's diff; bench/RESULTS.md records
# the scores and what was done about each surviving mutant.
set -euo pipefail
root=$(git rev-parse --show-toplevel)
dir=${MUTATION_DIR:-$root/bench/.mutation}
python -c "import mutmut" 2>/dev/null || pip install -q "mutmut>=3.8,<4"
if [ ! -d "$dir/p/.git" ]; then
    mkdir -p "$dir"
    git clone -q "$root" "$dir/p"
else
    git -C "$dir/p" pull -q "$root" HEAD  # resume on the newest commit; mutmut rechecks changed functions
fi
cd "$dir/p"
OMP_NUM_THREADS=1 mutmut run --max-children "${JOBS:-2}" "$@"
python bench/mutation_scores.py mutants
