"""No code runs from a checkpoint (issue #15 item 5): tampered pickles are refused, unexecuted."""

from __future__ import annotations

import os
import pickle

import pytest

from rayloom.errors import UserError
from rayloom.train import checkpoints as ckpts
from rayloom.train.safe_load import check_checkpoint_files, safe_torch_load, unsafe_globals

torch = pytest.importorskip("torch")


class _Payload:
    """Unpickling this touches a file: proof that code ran."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_torch_checkpoint_with_a_payload_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "rank0.pt"
    torch.save({"torch": torch.get_rng_state(), "extra": _Payload(str(marker))}, path)
    assert any("system" in g for g in unsafe_globals(path))
    with pytest.raises(UserError, match="refusing to load .*system"):
        safe_torch_load(path)
    assert not marker.exists()


def test_a_raw_pickle_is_refused_and_a_deepspeed_folder_with_one_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    tag = tmp_path / "ds" / "step00000002"
    tag.mkdir(parents=True)
    torch.save({"module": {"w": torch.ones(2)}}, tag / "mp_rank_00_model_states.pt")
    check_checkpoint_files(tmp_path / "ds")  # clean files pass
    with open(tag / "zero_pp_rank_0_mp_rank_00_optim_states.pt", "wb") as f:
        pickle.dump(_Payload(str(marker)), f)
    with pytest.raises(UserError, match="refusing to load checkpoint file .*optim_states.pt"):
        check_checkpoint_files(tmp_path / "ds")
    with pytest.raises(UserError, match="refusing to load"):
        safe_torch_load(tag / "zero_pp_rank_0_mp_rank_00_optim_states.pt")
    assert not marker.exists()


def test_rng_state_round_trips_through_a_weights_only_load(tmp_path):
    import random

    import numpy as np

    random.seed(3)
    np.random.seed(3)
    torch.manual_seed(3)
    torch.save(ckpts._rng_state(), tmp_path / "rank0.pt")
    assert unsafe_globals(tmp_path / "rank0.pt") == []  # tensors, ints and tuples only
    expected = (random.random(), float(np.random.rand()), float(torch.rand(1)))
    random.seed(9)
    np.random.seed(9)
    torch.manual_seed(9)
    ckpts._set_rng_state(safe_torch_load(tmp_path / "rank0.pt"))
    assert (random.random(), float(np.random.rand()), float(torch.rand(1))) == expected


def test_a_resume_refuses_a_tampered_rng_file_before_loading_anything(tmp_path):
    """checkpoints.resume scans DeepSpeed's folder and loads RNG state weights-only."""
    marker = tmp_path / "pwned"
    uri = tmp_path / ckpts.checkpoint_name(4, "abc123")
    (uri / ckpts.DS_DIR / "step00000004").mkdir(parents=True)
    (uri / ckpts.RNG_DIR).mkdir()
    torch.save({"python": _Payload(str(marker))}, uri / ckpts.RNG_DIR / "rank0.pt")
    (uri / ckpts.STATE_FILE).write_text(ckpts.TrainerState(step=4, ds_tag="step00000004").to_json())
    (uri / ckpts.MARKER).write_text("ok\n")

    class _Engine:
        loaded = False

        def load_checkpoint(self, *args, **kwargs):
            raise AssertionError("DeepSpeed must not be reached with a tampered folder")

    with pytest.raises(UserError, match="refusing to load checkpoint file .*rank0.pt"):
        ckpts.resume(_Engine(), str(uri), ckpts.TrainerState(), rank=0, world=1, uses_peft=False)
    assert not marker.exists()
