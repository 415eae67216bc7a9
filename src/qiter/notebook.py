"""Helpers for Jupyter notebooks, as the seed tutorial uses them."""

from __future__ import annotations

import base64
from pathlib import Path


def show_videos(video_folder: str = "", prefix: str = "") -> None:
    """
    Show the mp4 videos of a folder inside a notebook.

    :param video_folder: Folder holding the videos.
    :param prefix: Only videos whose file name starts with this prefix.
    """
    from IPython import display as ipythondisplay

    html = []
    for mp4 in sorted(Path(video_folder).glob(f"{prefix}*.mp4")):
        video_b64 = base64.b64encode(mp4.read_bytes()).decode("ascii")
        html.append(
            f"""<video alt="{mp4}" autoplay loop controls style="height: 400px;">
                <source src="data:video/mp4;base64,{video_b64}" type="video/mp4" />
            </video>"""
        )
    if not html:
        print(f"No video found in {video_folder!r} with prefix {prefix!r}")
        return
    ipythondisplay.display(ipythondisplay.HTML(data="<br>".join(html)))
