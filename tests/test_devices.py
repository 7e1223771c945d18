"""Device names: auto, explicit devices, and one clear line for a device this machine lacks."""
import pytest
import torch

from vidtriplane.devices import DeviceError, resolve_device
from vidtriplane.errors import VidtriplaneError


def test_auto_and_cpu():
    assert resolve_device("auto") == torch.device("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("cpu") == torch.device("cpu")


def test_bad_names_name_the_setting():
    with pytest.raises(DeviceError, match=r"landmarks.device='gpu0' is not a device; use auto, cpu, cuda or cuda:N"):
        resolve_device("gpu0", what="landmarks.device")
    with pytest.raises(VidtriplaneError, match=r"cuda:99: this machine has \d+ CUDA device|CUDA is not available"):
        resolve_device("cuda:99")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_cuda_says_what_to_use():
    with pytest.raises(DeviceError, match=r"runtime.device=cuda: CUDA is not available .* use --device cpu or auto"):
        resolve_device("cuda")
