"""Fitted Q Iteration (Ernst et al., 2005) with any scikit-learn regressor, and its fast paths.

FQI repeats one regression: inputs ``x = (s, a)``, targets ``y = r + gamma * max_a' Q_{k-1}(s', a')``
(no bootstrap when ``s'`` is terminal). The inputs never change between iterations, only the targets do.
For *linear smoothers* (kNN with uniform weights, least squares) the prediction is a fixed linear map of
the targets, so :func:`fitted_q_iteration` builds that map once (neighbour indices, or a projection) and
each iteration is a sparse or dense matrix-vector product: same Q-values as refitting, 20x+ faster.
Every other regressor is refit each iteration, with all actions predicted in one ``predict`` call.

The seed tutorial's names live here: ``OfflineData, collect_data, save_data, load_data, get_q_values,
evaluate, fitted_q_iteration``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any, Literal

import gymnasium as gym
import numpy as np
import scipy.sparse as sp
from sklearn.base import BaseEstimator, RegressorMixin, TransformerMixin
from sklearn.ensemble import ExtraTreesRegressor, GradientBoostingRegressor, RandomForestRegressor
from sklearn.linear_model import LinearRegression
from sklearn.metrics import r2_score
from sklearn.neighbors import KDTree, KNeighborsRegressor
from sklearn.neural_network import MLPRegressor
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import MinMaxScaler, PolynomialFeatures, StandardScaler
from sklearn.tree import DecisionTreeRegressor
from tqdm.auto import tqdm

from qiter.data import OfflineData, collect_data, load_data, save_data
from qiter.envs import OFFLINE_CONTINUOUS_HINT, require_discrete_actions
from qiter.errors import QiterError
from qiter.evaluation import run_episodes
from qiter.pixel_envs import refuse_images
from qiter.video import DEFAULT_VIDEO_FOLDER

__all__ = [
    "REGRESSORS",
    "FQIIteration",
    "OfflineData",
    "OneHotActions",
    "collect_data",
    "evaluate",
    "fitted_q_iteration",
    "get_q_values",
    "load_data",
    "make_regressor",
    "q_inputs",
    "save_data",
]

ActionEncoding = Literal["auto", "index", "one-hot"]
ModelFactory = Callable[[], Any]


# ----------------------------------------------------------------------------------------------------------
# Action encoding and Q-values
# ----------------------------------------------------------------------------------------------------------


class OneHotActions(TransformerMixin, BaseEstimator):
    """Replace the last input column (an action index) by its one-hot code.

    With more than two actions an index imposes a false order (action 2 "between" 1 and 3), so FQI puts this
    step in front of the regressor. Being part of the fitted model, the model still takes ``(s, a_index)``
    and the seed's :func:`get_q_values` works for both encodings.

    :param n_actions: Number of discrete actions.
    """

    def __init__(self, n_actions: int = 2) -> None:
        self.n_actions = n_actions

    def fit(self, X: np.ndarray, y: np.ndarray | None = None) -> OneHotActions:
        """Nothing to learn: the code only depends on ``n_actions``."""
        return self

    def transform(self, X: np.ndarray) -> np.ndarray:
        """``(n, d + 1)`` inputs with the action last -> ``(n, d + n_actions)``."""
        X = np.asarray(X, dtype=np.float64)
        index = X[:, -1].astype(np.int64)
        if np.any(index != X[:, -1]) or np.any(index < 0) or np.any(index >= self.n_actions):
            raise QiterError(
                f"action indices must be integers in [0, {self.n_actions}), got {np.unique(X[:, -1])}"
            )
        return np.concatenate((X[:, :-1], np.eye(self.n_actions)[index]), axis=1)


def resolve_action_encoding(action_encoding: str, n_actions: int) -> Literal["index", "one-hot"]:
    """``"auto"`` is the seed's index for two actions (a binary code anyway), one-hot above.

    :param action_encoding: ``"auto"``, ``"index"`` or ``"one-hot"``.
    :param n_actions: Number of discrete actions.
    """
    if action_encoding == "auto":
        return "index" if n_actions <= 2 else "one-hot"
    if action_encoding in ("index", "one-hot"):
        return action_encoding  # type: ignore[return-value]
    raise QiterError(f"unknown action encoding '{action_encoding}': use 'auto', 'index' or 'one-hot'")


def make_q_model(model_class: ModelFactory, n_actions: int, action_encoding: str = "index") -> Any:
    """A fresh, unfitted Q-model taking ``(s, a_index)`` inputs, with the one-hot step when asked.

    :param model_class: A class or factory returning an unfitted scikit-learn regressor.
    :param n_actions: Number of discrete actions.
    :param action_encoding: ``"index"`` or ``"one-hot"`` (``"auto"`` is resolved here too).
    """
    regressor = model_class()
    if resolve_action_encoding(action_encoding, n_actions) == "one-hot":
        return Pipeline([("actions", OneHotActions(n_actions)), ("regressor", regressor)])
    return regressor


def q_inputs(obs: np.ndarray, n_actions: int) -> np.ndarray:
    """Every ``(s, a)`` pair of a batch, action-major: rows ``a * B ... (a + 1) * B - 1`` hold action ``a``.

    :param obs: A batch of observations ``(B, obs_dim)``.
    :param n_actions: Number of discrete actions.
    :return: ``(n_actions * B, obs_dim + 1)`` regression inputs, the action index last.
    """
    batch_size = len(obs)
    flat = np.asarray(obs, dtype=np.float64).reshape(batch_size, -1)
    actions = np.repeat(np.arange(n_actions, dtype=np.float64), batch_size)[:, np.newaxis]
    return np.concatenate((np.tile(flat, (n_actions, 1)), actions), axis=1)


def get_q_values(
    model: RegressorMixin,
    obs: np.ndarray,
    n_actions: int,
) -> np.ndarray:
    """
    Retrieve the q-values for a set of observations(=states in the theory).
    qf(s_t, action) for all possible actions.

    All actions go through one ``model.predict`` call on the stacked inputs (the seed looped over the
    actions, one call each: same values, ``n_actions`` times the per-call overhead).

    :param model: Q-value estimator, taking ``(s, a_index)`` inputs (one-hot models carry their encoding
        as a :class:`OneHotActions` pipeline step).
    :param obs: A batch of observations
    :param n_actions: Number of discrete actions.
    :return: The predicted q-values for the given observations
        (batch_size, n_actions)
    """
    predicted = np.asarray(model.predict(q_inputs(obs, n_actions)), dtype=np.float64)
    return np.ascontiguousarray(predicted.reshape(n_actions, len(obs)).T)


def evaluate(
    model: RegressorMixin,
    env: gym.Env,
    n_eval_episodes: int = 10,
    video_name: str | None = None,
    video_folder: str | os.PathLike[str] = DEFAULT_VIDEO_FOLDER,
    seed: int | None = None,
    verbose: bool = True,
) -> tuple[float, float]:
    """Run the greedy policy ``argmax_a Q(s, a)`` and report its returns.

    :param model: Q-value estimator (see :func:`get_q_values`).
    :param env: The environment; made with ``render_mode="rgb_array"`` when a video is asked for.
    :param n_eval_episodes: Number of episodes.
    :param video_name: Record every episode into ``video_folder/video_name.mp4``.
    :param video_folder: Folder for the video.
    :param seed: Seed for the first reset, for reproducible evaluations.
    :param verbose: Print ``Total reward = mean +/- std`` as the seed does.
    :return: Mean and standard deviation of the episode returns.
    """
    n_actions = require_discrete_actions(env, "FQI", OFFLINE_CONTINUOUS_HINT)
    if n_eval_episodes < 1:
        raise QiterError(f"n_eval_episodes must be at least 1, not {n_eval_episodes}")

    def greedy_action(obs: np.ndarray) -> int:
        # Add a batch dimension: (obs_dim,) -> (1, obs_dim), then argmax over the actions.
        return int(np.argmax(get_q_values(model, obs[np.newaxis, ...], n_actions), axis=1).item())

    episode_returns = run_episodes(
        env, greedy_action, n_eval_episodes, video_name=video_name, video_folder=video_folder, seed=seed
    )
    mean, std = float(np.mean(episode_returns)), float(np.std(episode_returns))
    if verbose:
        tqdm.write(f"Total reward = {mean:.2f} +/- {std:.2f}")
    return mean, std


# ----------------------------------------------------------------------------------------------------------
# Named regressors
# ----------------------------------------------------------------------------------------------------------


def _poly(seed: int | None = None) -> Any:
    return make_pipeline(PolynomialFeatures(degree=2), LinearRegression())


REGRESSORS: dict[str, tuple[Callable[[int | None], ModelFactory], str]] = {
    "knn": (
        lambda seed: partial(KNeighborsRegressor, n_neighbors=30),
        "k-nearest neighbours, k=30 (the seed's)",
    ),
    "linear": (lambda seed: LinearRegression, "least squares on (s, a)"),
    "poly": (lambda seed: partial(_poly, seed), "degree-2 polynomial features + least squares"),
    "tree": (lambda seed: partial(DecisionTreeRegressor, random_state=seed), "one CART regression tree"),
    "extra-trees": (
        # Ernst, Geurts & Wehenkel (2005): M = 50 trees, K = all input dims, n_min = 2
        lambda seed: partial(
            ExtraTreesRegressor, n_estimators=50, max_features=1.0, min_samples_split=2, random_state=seed
        ),
        "Extra-Trees as in Ernst et al. 2005 (M=50, K=input dim, n_min=2)",
    ),
    "random-forest": (
        lambda seed: partial(RandomForestRegressor, n_estimators=50, random_state=seed),
        "random forest, 50 trees",
    ),
    "gradient-boosting": (
        lambda seed: partial(GradientBoostingRegressor, random_state=seed),
        "gradient-boosted trees (sklearn defaults)",
    ),
    "mlp": (
        # NFQ (Riedmiller 2005) refits a small multilayer perceptron on the whole batch each iteration
        lambda seed: partial(MLPRegressor, hidden_layer_sizes=(64, 64), max_iter=200, random_state=seed),
        "NFQ-style MLP, two hidden layers of 64",
    ),
}


def make_regressor(name: str, seed: int | None = None) -> ModelFactory:
    """The factory of a named regressor of :data:`REGRESSORS` (what ``qiter fqi --regressor`` takes).

    :param name: One of ``knn, linear, poly, tree, extra-trees, random-forest, gradient-boosting, mlp``.
    :param seed: ``random_state`` of the randomized regressors.
    """
    if name not in REGRESSORS:
        raise QiterError(f"unknown regressor '{name}'; choose one of: {', '.join(REGRESSORS)}")
    return REGRESSORS[name][0](seed)


# ----------------------------------------------------------------------------------------------------------
# Fast paths: linear smoothers, whose prediction is a fixed linear map of the targets
# ----------------------------------------------------------------------------------------------------------

# Transformers fitted on the inputs alone: with fixed inputs they are the same every iteration.
_INPUT_ONLY_TRANSFORMERS = (OneHotActions, PolynomialFeatures, StandardScaler, MinMaxScaler)


class _Smoother:
    """Predictions of the regressor fit on targets ``y``, as a linear map of ``y``."""

    def next_q(self, targets: np.ndarray) -> np.ndarray:
        """Q-values of every next ``(s', a)`` query (action-major), for the fit on ``targets``."""
        raise NotImplementedError

    def fitted(self, targets: np.ndarray) -> np.ndarray:
        """Predictions on the training inputs, for the fit on ``targets`` (for the R^2 score)."""
        raise NotImplementedError


def _split_pipeline(model: Any) -> tuple[list[Any], Any]:
    """The fitted transformer steps and the final estimator of a (possibly nested) pipeline."""
    if isinstance(model, Pipeline):
        steps = [step for _, step in model.steps[:-1] if step not in (None, "passthrough")]
        inner_steps, final = _split_pipeline(model.steps[-1][1])
        return steps + inner_steps, final
    return [], model


def _transform(steps: list[Any], inputs: np.ndarray) -> np.ndarray:
    for step in steps:
        inputs = step.transform(inputs)
    return np.asarray(inputs, dtype=np.float64)


def _averaging_matrix(indices: np.ndarray, n_train: int) -> sp.csr_matrix:
    """Sparse ``W`` with ``(W @ y)[i] = mean(y[indices[i]])``: the uniform kNN prediction."""
    n_rows, k = indices.shape
    data = np.full(indices.size, 1.0 / k)
    return sp.csr_matrix((data, indices.ravel(), np.arange(0, indices.size + 1, k)), shape=(n_rows, n_train))


class _KNNSmoother(_Smoother):
    """Uniform kNN: each prediction is the mean target of fixed neighbours, a sparse matrix-vector product."""

    def __init__(
        self, next_indices: np.ndarray, train_neighbours: Callable[[], np.ndarray], n_train: int
    ) -> None:
        self._next = _averaging_matrix(next_indices, n_train)
        self._train_neighbours = train_neighbours
        self._train: sp.csr_matrix | None = None
        self._n_train = n_train

    def next_q(self, targets: np.ndarray) -> np.ndarray:
        return np.asarray(self._next @ targets)

    def fitted(self, targets: np.ndarray) -> np.ndarray:
        if self._train is None:  # only needed for scores: computed once, on first use
            self._train = _averaging_matrix(self._train_neighbours(), self._n_train)
        return np.asarray(self._train @ targets)


def _knn_by_action(
    train_states: np.ndarray,
    train_actions: np.ndarray,
    query_states: np.ndarray,
    query_actions: np.ndarray,
    codes: np.ndarray,
    k: int,
    leaf_size: int,
    exact: Callable[[np.ndarray], np.ndarray],
) -> np.ndarray:
    """The ``k`` nearest training inputs of each query ``(s, a)``, searched action group by action group.

    The squared input distance splits as ``|s - s_i|^2 + |code(a) - code(a_i)|^2``, and the code part is a
    constant per pair of actions. So one KD-tree per action on the states alone (one dimension less, a
    fraction of the points) finds the neighbours, and the other actions' groups are searched only for the
    queries whose ``k+1``-th candidate is farther than that constant (few or none: random data is dense).
    Queries whose ``k``-th and ``k+1``-th distances (nearly) tie, where the order of a search decides who is
    in, go to ``exact``: the regressor's own ``kneighbors``, so the neighbour sets are always the ones its
    ``predict`` would use.

    :return: ``(n_queries, k)`` indices into the training inputs.
    """
    n_actions = len(codes)
    offsets = np.sqrt(((codes[:, np.newaxis, :] - codes[np.newaxis, :, :]) ** 2).sum(-1))
    groups = [np.flatnonzero(train_actions == g) for g in range(n_actions)]
    trees = [KDTree(train_states[g], leaf_size=leaf_size) if len(g) else None for g in groups]
    kk = k + 1  # one more than needed, to see ties at the boundary
    indices = np.empty((len(query_states), k), dtype=np.int64)
    tied: list[np.ndarray] = []
    for a in range(n_actions):
        rows = np.flatnonzero(query_actions == a)
        if len(rows) == 0:
            continue
        best_d = np.full((len(rows), kk), np.inf)
        best_i = np.full((len(rows), kk), -1, dtype=np.int64)
        for g in np.argsort(offsets[a], kind="stable"):
            tree = trees[g]
            if tree is None:
                continue
            # A point of group g is at least offsets[a, g] away: search only where it could still enter
            need = np.flatnonzero(best_d[:, -1] >= offsets[a, g])
            if len(need) == 0:
                continue
            dist, ind = tree.query(query_states[rows[need]], k=min(kk, len(groups[g])))
            dist = np.sqrt(dist**2 + offsets[a, g] ** 2)
            merged_d = np.concatenate((best_d[need], dist), axis=1)
            merged_i = np.concatenate((best_i[need], groups[g][ind]), axis=1)
            order = np.argsort(merged_d, axis=1, kind="stable")[:, :kk]
            best_d[need] = np.take_along_axis(merged_d, order, axis=1)
            best_i[need] = np.take_along_axis(merged_i, order, axis=1)
        indices[rows] = best_i[:, :k]
        gap = best_d[:, k] - best_d[:, k - 1]
        tied.append(rows[gap <= 1e-9 * (1.0 + best_d[:, k - 1])])
    ties = np.concatenate(tied) if tied else np.empty(0, dtype=np.int64)
    if len(ties):
        indices[ties] = exact(ties)
    return indices


def _knn_smoother(
    model: Any,
    steps: list[Any],
    final: KNeighborsRegressor,
    inputs: np.ndarray,
    next_inputs: np.ndarray,
    codes: np.ndarray,
) -> _KNNSmoother:
    k = int(final.n_neighbors)
    n_train = len(inputs)

    def exact(query: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
        def neighbours(rows: np.ndarray) -> np.ndarray:
            return np.asarray(final.kneighbors(_transform(steps, query[rows]), return_distance=False))

        return neighbours

    euclidean = final.effective_metric_ == "euclidean" and not final.effective_metric_params_
    if euclidean and all(isinstance(step, OneHotActions) for step in steps):
        search = partial(
            _knn_by_action,
            inputs[:, :-1],
            inputs[:, -1].astype(np.int64),
            codes=codes,
            k=k,
            leaf_size=int(final.leaf_size),
        )
        next_indices = search(
            next_inputs[:, :-1], next_inputs[:, -1].astype(np.int64), exact=exact(next_inputs)
        )

        def train_neighbours() -> np.ndarray:
            return search(inputs[:, :-1], inputs[:, -1].astype(np.int64), exact=exact(inputs))

    else:
        # Any other metric or preprocessing: the regressor's own search, once
        next_indices = exact(next_inputs)(np.arange(len(next_inputs)))

        def train_neighbours() -> np.ndarray:
            return exact(inputs)(np.arange(n_train))

    return _KNNSmoother(next_indices, train_neighbours, n_train)


class _LeastSquaresSmoother(_Smoother):
    """Least squares: predictions ``y_mean + B U^T (y - y_mean)``, ``U`` and ``B`` from one SVD."""

    def __init__(self, features: np.ndarray, next_features: np.ndarray, fit_intercept: bool) -> None:
        # As LinearRegression: centre the features (the intercept absorbs the means), then the minimum-norm
        # least-squares solution, dropping singular values below the same relative cutoff as its lstsq.
        self._centre = bool(fit_intercept)
        mean = features.mean(axis=0) if fit_intercept else np.zeros(features.shape[1])
        u, s, vt = np.linalg.svd(features - mean, full_matrices=False)
        keep = s > s[0] * max(features.shape) * np.finfo(np.float64).eps if len(s) and s[0] > 0 else s > 0
        self._u = u[:, keep]
        self._next = ((next_features - mean) @ vt[keep].T) / s[keep]

    def _coefficients(self, targets: np.ndarray) -> tuple[float, np.ndarray]:
        offset = float(targets.mean()) if self._centre else 0.0
        return offset, self._u.T @ (targets - offset)

    def next_q(self, targets: np.ndarray) -> np.ndarray:
        offset, coef = self._coefficients(targets)
        return np.asarray(offset + self._next @ coef)

    def fitted(self, targets: np.ndarray) -> np.ndarray:
        offset, coef = self._coefficients(targets)
        return np.asarray(offset + self._u @ coef)


def _make_smoother(
    model: Any, inputs: np.ndarray, next_inputs: np.ndarray, codes: np.ndarray
) -> _Smoother | None:
    """The fast path for a fitted model, or ``None`` when it is not a linear smoother we know."""
    steps, final = _split_pipeline(model)
    if not all(isinstance(step, _INPUT_ONLY_TRANSFORMERS) for step in steps):
        return None
    if isinstance(final, KNeighborsRegressor) and final.weights == "uniform":
        return _knn_smoother(model, steps, final, inputs, next_inputs, codes)
    if isinstance(final, LinearRegression) and not final.positive:
        return _LeastSquaresSmoother(
            _transform(steps, inputs), _transform(steps, next_inputs), fit_intercept=final.fit_intercept
        )
    return None


# ----------------------------------------------------------------------------------------------------------
# The algorithm
# ----------------------------------------------------------------------------------------------------------


@dataclass
class FQIIteration:
    """What happened in one FQI iteration (iteration 0 is the first fit, on the rewards)."""

    iteration: int
    target_mean: float
    target_std: float
    target_max: float
    seconds: float  # wall time of the iteration, evaluation excluded
    score: float | None = None  # R^2 of the fit on its own targets, as the seed prints (when evaluated)
    eval_mean: float | None = None
    eval_std: float | None = None


def _infer_n_actions(data: OfflineData, env: gym.Env | None, n_actions: int | None) -> int:
    if env is not None:
        env_actions = require_discrete_actions(env, "FQI", OFFLINE_CONTINUOUS_HINT)
        refuse_images(env, "FQI")
        if n_actions is not None and n_actions != env_actions:
            raise QiterError(f"n_actions={n_actions} but the environment has {env_actions} actions")
        n_actions = env_actions
    largest = int(data.actions.max()) + 1 if len(data) else 1
    if n_actions is None:
        n_actions = max(largest, 2)
    if largest > n_actions:
        raise QiterError(f"the data holds action {largest - 1}, but there are only {n_actions} actions")
    return n_actions


def fitted_q_iteration(
    data: OfflineData,
    model_class: ModelFactory,
    n_iterations: int = 20,
    gamma: float = 0.99,
    env: gym.Env | None = None,
    eval_freq: int = 2,
    n_eval_episodes: int = 10,
    n_actions: int | None = None,
    action_encoding: ActionEncoding = "auto",
    fast: bool = True,
    progress: bool = False,
    verbose: bool = True,
    eval_seed: int | None = None,
    callback: Callable[[FQIIteration], None] | None = None,
) -> tuple[Any, list[FQIIteration]]:
    """Fitted Q Iteration on a fixed batch of transitions.

    Iteration 0 fits ``Q_0(s, a) = r``; iteration ``k`` fits
    ``Q_k(s, a) = r + gamma * max_a' Q_{k-1}(s', a')``, without bootstrap on true terminations.

    :param data: The transitions.
    :param model_class: A class or factory returning an unfitted scikit-learn regressor, e.g.
        ``partial(KNeighborsRegressor, n_neighbors=30)`` or ``make_regressor("extra-trees")``.
    :param n_iterations: Number of iterations after the first fit.
    :param gamma: Discount factor.
    :param env: Environment for the periodic greedy evaluations (none without it).
    :param eval_freq: Evaluate (and score) every ``eval_freq`` iterations and after the last; 0: never.
    :param n_eval_episodes: Episodes per evaluation.
    :param n_actions: Number of actions; from ``env``, else from the data.
    :param action_encoding: ``"index"`` (the seed's), ``"one-hot"``, or ``"auto"`` (one-hot above 2 actions).
    :param fast: Use the linear-smoother fast path when the regressor allows (kNN, least squares).
    :param progress: Show a progress bar over the iterations.
    :param verbose: Print the seed's ``Iter / Score / Total reward`` lines at each evaluation.
    :param eval_seed: Seed of the evaluation episodes.
    :param callback: Called with each iteration's record.
    :return: The final model (a fitted scikit-learn estimator taking ``(s, a_index)``) and the history.
    """
    if n_iterations < 0:
        raise QiterError(f"n_iterations must be >= 0, not {n_iterations}")
    if not 0.0 <= gamma <= 1.0:
        raise QiterError(f"gamma must be in [0, 1], not {gamma}")
    data.validate()
    n_actions = _infer_n_actions(data, env, n_actions)  # before the shape check: the action space says more
    if env is not None:
        data.validate(env)
    encoding = resolve_action_encoding(action_encoding, n_actions)
    codes = (
        np.arange(n_actions, dtype=np.float64)[:, np.newaxis] if encoding == "index" else np.eye(n_actions)
    )
    n = len(data)
    inputs = np.concatenate((data.observations.reshape(n, -1), data.actions), axis=1).astype(np.float64)
    next_inputs = q_inputs(data.next_observations, n_actions)
    rewards = np.asarray(data.rewards, dtype=np.float64)
    not_terminated = np.logical_not(data.terminateds)

    def fit(targets: np.ndarray) -> Any:
        return make_q_model(model_class, n_actions, encoding).fit(inputs, targets)

    history: list[FQIIteration] = []
    start = time.perf_counter()
    targets = rewards.copy()
    model: Any = fit(targets)  # First iteration: the target q-value is the reward obtained
    smoother = _make_smoother(model, inputs, next_inputs, codes) if fast else None
    history.append(FQIIteration(0, float(targets.mean()), float(targets.std()), float(targets.max()), 0.0))
    history[0].seconds = time.perf_counter() - start

    for iteration in tqdm(range(1, n_iterations + 1), desc="FQI", disable=not progress, unit="iter"):
        start = time.perf_counter()
        # Q_{k-1}(s', a) for all a, from the previous fit (or its linear map on the previous targets)
        next_q = smoother.next_q(targets) if smoother is not None else model.predict(next_inputs)
        max_next_q = np.asarray(next_q, dtype=np.float64).reshape(n_actions, n).max(axis=0)
        targets = rewards + gamma * max_next_q * not_terminated
        model = None if smoother is not None else fit(targets)
        record = FQIIteration(
            iteration, float(targets.mean()), float(targets.std()), float(targets.max()), 0.0
        )
        evaluating = eval_freq > 0 and (iteration % eval_freq == 0 or iteration == n_iterations)
        if evaluating:
            if smoother is not None:
                record.score = float(r2_score(targets, smoother.fitted(targets)))
            else:
                record.score = float(model.score(inputs, targets))
        record.seconds = time.perf_counter() - start
        if evaluating:
            if verbose:
                tqdm.write(f"Iter {iteration}")
                tqdm.write(f"Score: {record.score:.2f}")
            if env is not None:
                if model is None:
                    model = fit(targets)
                record.eval_mean, record.eval_std = evaluate(
                    model, env, n_eval_episodes, seed=eval_seed, verbose=verbose
                )
        history.append(record)
        if callback is not None:
            callback(record)
    if model is None:
        # The fast path never refits; the caller gets the real estimator, fit once on the final targets
        model = fit(targets)
    return model, history
