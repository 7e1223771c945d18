"""What the benchmarks write about the machine they ran on."""
from pathlib import Path

import torch

from vidtriplane import speed


def test_cpu_device_name_names_the_processor_and_threads():
    name = speed.device_name(torch.device("cpu"))
    assert name.startswith("cpu ") and name.endswith(f"({torch.get_num_threads()} threads)")
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        models = [line.split(":", 1)[1].strip() for line in cpuinfo.read_text(errors="replace").splitlines()
                  if line.lower().startswith("model name")]
        if models:
            assert speed.cpu_model() == models[0] and models[0] in name
