"""Following a run from outside it: periodic evaluation videos, and Weights & Biases tracking.

Both are :class:`~qiter.lifecycle.RunEvents`, so any training function takes them (``events=[...]``) and
the run loop knows nothing of them; ``qiter train --video-every N --track`` builds them. As in CleanRL and
the RL Zoo, a tracked run sends its config, every logged row (episodes, training metrics, evaluations,
against ``global_step``) and its evaluation videos to W&B; ``WANDB_MODE=offline`` keeps it all on disk
(``wandb sync`` uploads it later).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from qiter.agent import Agent, Evaluation
from qiter.config import config_to_dict
from qiter.errors import QiterError
from qiter.evaluation import run_episodes
from qiter.lifecycle import RunEvents
from qiter.run_config import RunConfig
from qiter.runs import safe_name

__all__ = ["EvaluationVideos", "WandbTracker"]


class EvaluationVideos(RunEvents):
    """Record one greedy episode to an mp4 at every ``every``-th periodic evaluation.

    The episode runs on a fresh environment made by the agent (``render_mode="rgb_array"``), with the
    greedy policy: it draws nothing from the training's random streams, so the run is the same with or
    without videos.

    :param folder: Where the videos go (a run's ``videos/``); each is ``<algo>-<env>-step-<step>.mp4``.
    :param every: Record at evaluations ``every``, ``2 * every``...
    :param seed: Seed of the recorded episode's reset (plus the step, so each video shows a new start).
    """

    def __init__(self, folder: str | Path, every: int, seed: int = 0) -> None:
        if every < 1:
            raise QiterError(f"--video-every must be at least 1, got {every}")
        self.folder, self.every, self.seed = Path(folder), every, seed
        self.evaluations = 0
        #: ``(step, path)`` of each video recorded so far, oldest first.
        self.recorded: list[tuple[int, Path]] = []

    def on_evaluation(self, step: int, mean_return: float, std_return: float, agent: Any) -> bool | None:
        self.evaluations += 1
        if self.evaluations % self.every:
            return None
        assert isinstance(agent, Agent)
        name = f"{agent.algo}-{safe_name(agent.config.env_id)}-step-{step}"
        env = agent.make_env(agent.config, render_mode="rgb_array")
        try:
            run_episodes(
                env, agent.greedy_actor(), 1, video_name=name, video_folder=self.folder, seed=self.seed + step
            )
        finally:
            env.close()
        self.recorded.append((step, self.folder / f"{name}.mp4"))
        return None


class WandbTracker(RunEvents):
    """Send a run to Weights & Biases: its config at the start, each logged row as it is written, the
    videos of :class:`EvaluationVideos` after each evaluation, and the final evaluation at :meth:`finish`.

    :param config: The run's config (sent with the algorithm's name).
    :param algo: The algorithm.
    :param run_dir: The run folder: W&B keeps its files in ``run_dir/wandb`` and names the run after it.
    :param project: The W&B project.
    :param entity: The W&B team or user (default: the logged-in user's).
    :param videos: The run's evaluation videos, if recorded.
    :raises QiterError: ``wandb`` is not installed, or cannot start (not logged in, say).
    """

    def __init__(
        self,
        config: RunConfig,
        algo: str,
        run_dir: Path | None = None,
        project: str = "qiter",
        entity: str | None = None,
        videos: EvaluationVideos | None = None,
    ) -> None:
        try:
            import wandb
        except ImportError:
            raise QiterError('--track needs Weights & Biases: pip install "qiter[track]"') from None
        self._wandb = wandb
        try:
            self.run = wandb.init(
                project=project,
                entity=entity,
                name=run_dir.name if run_dir is not None else None,
                dir=str(run_dir) if run_dir is not None else None,
                config={"algo": algo, **config_to_dict(config)},
                tags=[algo, config.env_id],
                job_type="train",
            )
        except Exception as error:  # not logged in, no network in online mode...
            first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise QiterError(
                f"Weights & Biases did not start: {first} (`wandb login`, or WANDB_MODE=offline to keep the run "
                "on disk)"
            ) from None
        # Every metric against the environment step, as CleanRL's runs are.
        self.run.define_metric("global_step")
        self.run.define_metric("*", step_metric="global_step")
        self.videos = videos
        self._videos_sent = 0

    def on_log(self, kind: str, step: int, row: Mapping[str, float]) -> None:
        self.run.log({"global_step": step, **{f"{kind}/{key}": value for key, value in row.items()}})

    def on_evaluation(self, step: int, mean_return: float, std_return: float, agent: Any) -> bool | None:
        self._send_videos()
        return None

    def _send_videos(self) -> None:
        """The videos recorded since the last call."""
        if self.videos is None:
            return
        for step, path in self.videos.recorded[self._videos_sent :]:
            if path.is_file():
                video = self._wandb.Video(str(path), format="mp4")
                self.run.log({"global_step": step, "videos/evaluation": video})
        self._videos_sent = len(self.videos.recorded)

    def finish(
        self,
        final: Evaluation | None = None,
        step: int | None = None,
        video: Path | None = None,
        failed: bool = False,
    ) -> None:
        """End the W&B run: the final evaluation in its summary (and its video), or the failure.

        :param final: The final greedy evaluation.
        :param step: The run's last step.
        :param video: The final evaluation's mp4, if recorded.
        :param failed: The run ended with an error.
        """
        self._send_videos()
        if final is not None:
            self.run.summary["final/mean_return"] = final.mean_return
            self.run.summary["final/std_return"] = final.std_return
            self.run.summary["final/episodes"] = len(final.returns)
        if video is not None and video.is_file():
            self.run.log(
                {"global_step": step or 0, "videos/final": self._wandb.Video(str(video), format="mp4")}
            )
        self.run.finish(exit_code=1 if failed else 0)
