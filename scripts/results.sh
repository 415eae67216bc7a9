#!/usr/bin/env bash
# The runs, tables and plots of docs/results.md and docs/stability.md, made with qiter's own commands:
# `qiter sweep` trains each shipped DQN preset over seeds (10 for CartPole, 3 for the longer tasks), scores
# the network each run ends with by 20 greedy episodes, `qiter report` tables the final returns (IQM with a
# 95% stratified-bootstrap interval, and the peak mean Q) and `qiter plot` draws the learning curves.
#
#   bash scripts/results.sh [OUT]                  # runs under OUT (default: results/), plots into docs/
#   JOBS=4 bash scripts/results.sh                 # runs in parallel (default: 2)
#   QITER_SMOKE=1 bash scripts/results.sh /tmp/x   # 2500 steps, 2 seeds, plots into OUT: checks the script
#
# Started again, it skips the finished runs (that is what `qiter sweep` does).
set -euo pipefail

out=${1:-results}
jobs=${JOBS:-2}
plots=docs
smoke=()
if [[ -n "${QITER_SMOKE:-}" ]]; then
    smoke=(--steps 2500 --seeds 0-1 --set evaluation_interval=500)
    plots=$out
fi
mkdir -p "$out" "$plots"

sweep() {  # sweep NAME ENV_ID [qiter sweep options]
    local name=$1
    shift
    qiter sweep "$@" --jobs "$jobs" --set n_eval_episodes=20 --no-progress --out "$out/$name" "${smoke[@]}"
}

# CartPole-v1, 10 seeds: the stable preset, the preset it replaced (a target copy every 10 steps and the
# learning rate decayed to 0) with its early stop turned off, the stable preset with a constant learning
# rate, the seed's settings and Rainbow-lite.
sweep cartpole-stable CartPole-v1 --preset CartPole-v1-stable --seeds 0-9
sweep cartpole-stable-before CartPole-v1 --preset CartPole-v1-stable --seeds 0-9 \
    --set target_network_update_interval=10 --set learning_rate_final=0 --set learning_rate_decay_start=0
sweep cartpole-stable-const CartPole-v1 --preset CartPole-v1-stable --seeds 0-9 --set learning_rate_final=none
sweep cartpole-seed CartPole-v1 --preset CartPole-v1 --seeds 0-9
sweep cartpole-rainbow-lite CartPole-v1 --preset CartPole-v1-rainbow-lite --seeds 0-9
# The longer tasks, 3 seeds each (LunarLander needs pip install "qiter[box2d]").
sweep acrobot Acrobot-v1 --preset Acrobot-v1 --seeds 0-2
sweep mountaincar MountainCar-v0 --preset MountainCar-v0 --seeds 0-2
sweep lunarlander LunarLander-v3 --preset LunarLander-v3 --seeds 0-2
sweep lunarlander-rlberry LunarLander-v3 --preset LunarLander-v3-rlberry --seeds 0-2

cartpole=("$out/cartpole-stable" "$out/cartpole-stable-before" "$out/cartpole-stable-const" "$out/cartpole-seed"
    "$out/cartpole-rainbow-lite")
labels=(CartPole-v1-stable "previous stable, no early stop" "stable, constant rate" "CartPole-v1 (the seed's)"
    CartPole-v1-rainbow-lite)
qiter report "${cartpole[@]}" --labels "${labels[@]}" --threshold 475
qiter plot "${cartpole[@]}" --labels "${labels[@]}" --out "$plots/results-cartpole.png"
qiter plot "${cartpole[@]}" --labels "${labels[@]}" --metric mean_q --out "$plots/results-cartpole-q.png" \
    --title "CartPole-v1: mean Q of the minibatches, IQM across seeds, 95% CI"
for task in acrobot mountaincar lunarlander lunarlander-rlberry; do
    qiter report "$out/$task"
done
qiter plot "$out/acrobot" "$out/mountaincar" --labels Acrobot-v1 MountainCar-v0 --out "$plots/results-classic.png"
qiter plot "$out/lunarlander" "$out/lunarlander-rlberry" --labels LunarLander-v3 LunarLander-v3-rlberry \
    --out "$plots/results-lunarlander.png"
