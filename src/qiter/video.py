"""Recording evaluation episodes to mp4 with gymnasium's own ``RecordVideo`` wrapper.

The seeds used ``VideoRecorder``, which gymnasium 1.x removed; ``RecordVideo`` with a manual
``start_recording`` gives the same result: one mp4 holding every evaluation episode.
"""

from __future__ import annotations

import os
import sys
import tempfile
import warnings
from pathlib import Path

import gymnasium as gym
from gymnasium.wrappers import RecordVideo

from qiter.errors import QiterError

DEFAULT_VIDEO_FOLDER = "logs/videos"


def video_env(
    env: gym.Env, video_name: str, video_folder: str | os.PathLike[str] = DEFAULT_VIDEO_FOLDER
) -> RecordVideo:
    """Wrap ``env`` so that everything it renders from now on goes into ``video_folder/video_name.mp4``.

    Call :func:`finish_video` when done: it writes the file and leaves ``env`` open.

    :param env: An environment made with ``render_mode="rgb_array"``.
    :param video_name: File name without the ``.mp4`` suffix (a ``/`` of a namespaced env id becomes ``_``).
    :param video_folder: Folder for the video (created if needed).
    :return: The wrapped environment, already recording.
    """
    if env.render_mode != "rgb_array":
        raise QiterError(
            f"recording a video needs an env made with render_mode='rgb_array', not {env.render_mode!r}"
        )
    Path(video_folder).mkdir(parents=True, exist_ok=True)
    _init_display_quietly()
    # Never trigger on its own, and a finite but huge length: with 0 (unbounded) RecordVideo would cut the
    # video at the next reset, and we want every evaluation episode in one file.
    with warnings.catch_warnings():
        # We create the folder ourselves, and one video name never overwrites another.
        warnings.filterwarnings("ignore", message=".*Overwriting existing videos.*")
        wrapped = RecordVideo(
            env,
            str(video_folder),
            step_trigger=lambda _: False,
            video_length=10**9,
            disable_logger=True,
        )
    wrapped.start_recording(video_name.replace("/", "_").replace(os.sep, "_"))
    return wrapped


def _init_display_quietly() -> None:
    """Initialise pygame's display now, without the ``XDG_RUNTIME_DIR is invalid or not set`` line.

    Rendering to ``rgb_array`` still calls ``pygame.display.init()``, and SDL then tries its Wayland driver
    first: libwayland prints that line to stderr when ``XDG_RUNTIME_DIR`` is unset (a headless machine, a
    container, an ssh session), though SDL goes on to another driver and nothing fails. For that instant an
    empty private folder stands in for it: the Wayland probe fails quietly and SDL picks the same driver as
    it would have. The environment is left as it was, and a user's own ``XDG_RUNTIME_DIR`` or
    ``SDL_VIDEODRIVER`` is never overridden.
    """
    if not sys.platform.startswith("linux") or "XDG_RUNTIME_DIR" in os.environ:
        return
    if "SDL_VIDEODRIVER" in os.environ:  # the user chose a driver: SDL probes no other
        return
    try:
        import pygame  # gymnasium imports it the same way to render, and hides its banner
    except ImportError:  # the env's render() will say how to install it
        return
    if pygame.display.get_init():
        return
    with tempfile.TemporaryDirectory(prefix="qiter-xdg-") as runtime_dir:
        os.environ["XDG_RUNTIME_DIR"] = runtime_dir
        try:
            pygame.display.init()
        finally:
            del os.environ["XDG_RUNTIME_DIR"]


def finish_video(wrapped: RecordVideo) -> Path:
    """Write the mp4 recorded by :func:`video_env` and return its path (the inner env stays open)."""
    path = Path(wrapped.video_folder) / f"{wrapped._video_name}.mp4"
    if wrapped.recording:
        wrapped.stop_recording()
    return path
