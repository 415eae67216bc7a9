"""--device: what torch cannot parse, and CUDA asked for where there is none, each refused in one line."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from messages import one_line

from qiter.cli import main
from qiter.devices import check_device
from qiter.errors import QiterError
from qiter.run_config import RunConfig

no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")


def test_check_device_refuses_what_torch_cannot_parse() -> None:
    check_device("cpu")
    for name in ("gpu", "", "cuda:x"):
        with pytest.raises(QiterError, match="must be a torch device"):
            check_device(name)
    with pytest.raises(QiterError, match="device"):
        RunConfig(device="gpu").validate()


@no_cuda
@pytest.mark.parametrize("name", ["cuda", "cuda:0", "cuda:1"])
def test_check_device_without_cuda(name: str) -> None:
    with pytest.raises(QiterError) as info:
        check_device(name)
    message = one_line(str(info.value))
    assert name in message and "not available" in message and "--device cpu" in message
    with pytest.raises(QiterError, match="--device cpu"):
        RunConfig(device=name).validate()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_check_device_with_cuda() -> None:
    check_device("cuda")
    check_device("cuda:0")
    count = torch.cuda.device_count()
    with pytest.raises(QiterError, match=f"has {count} CUDA device"):
        check_device(f"cuda:{count}")


@no_cuda
def test_cli_train_on_cuda_without_cuda_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["train", "CartPole-v1", "--device", "cuda", "--steps", "100", "--runs-dir", str(tmp_path)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("qiter: error: ") and "--device cpu" in err
    assert list(tmp_path.iterdir()) == []  # no run folder
