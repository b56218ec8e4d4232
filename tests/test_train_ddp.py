"""Two CPU processes (gloo) train with DDP: parameters stay identical, data differs by rank."""

import json
import os
import socket

import pytest
import torch
import torch.multiprocessing as mp

from unisono.train.data import rank_split, split_by_task
from unisono.train.toydata import toy_examples, toy_vocab_size

K, C = 2, 8


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, out: str, fsdp: bool) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    import torch.distributed as dist

    from unisono.train.trainer import Trainer

    ex = toy_examples(24, K, C, seed=0, max_len=5)

    def sources(r, w):
        return {t: rank_split(src, r, w) for t, src in split_by_task(ex).items()}

    mcfg = dict(vocab_size=toy_vocab_size(K, C), num_streams=K, pad_id=0, pattern="delay", d_model=32, n_layers=2,
                n_heads=4, max_seq_len=64)
    tcfg = dict(max_steps=3, lr=3e-3, warmup_steps=1, max_frames=40, pool_size=6, save_every=0, log_every=1,
                tensorboard=False, fsdp=fsdp, device="cpu", eval_every=3, grad_accum=2)
    tr = Trainer(mcfg, tcfg, out, sources, val_sources=sources)
    ids = []
    orig = tr._micro_batches

    def spy():
        mbs = orig()
        ids.extend(i for mb in mbs for i in mb["ids"])
        return mbs

    tr._micro_batches = spy
    tr.train(progress=False)
    sd = {k: v.tolist() for k, v in tr.model.state_dict().items()} if not fsdp else None
    if fsdp:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        full = get_model_state_dict(tr.wrapped, options=StateDictOptions(full_state_dict=True))
        sd = {k.removeprefix("model."): v.tolist() for k, v in full.items()}
    with open(os.path.join(out, f"rank{rank}.json"), "w") as f:
        json.dump({"params": sd, "ids": ids}, f)
    dist.barrier()
    dist.destroy_process_group()


def _run(tmp_path, fsdp=False):
    out = str(tmp_path / "run")
    os.makedirs(out, exist_ok=True)
    mp.start_processes(_worker, args=(2, _free_port(), out, fsdp), nprocs=2, join=True, start_method="fork")
    r0 = json.load(open(os.path.join(out, "rank0.json")))
    r1 = json.load(open(os.path.join(out, "rank1.json")))
    return out, r0, r1


def test_two_process_ddp_stays_in_sync(tmp_path):
    out, r0, r1 = _run(tmp_path)
    assert r0["params"].keys() == r1["params"].keys()
    for k in r0["params"]:
        assert r0["params"][k] == r1["params"][k], k
    assert not set(r0["ids"]) & set(r1["ids"])  # each rank reads its own part of the data
    # the saved checkpoint holds the synced weights and training moved them
    from unisono.lm import UnisonoLM

    m = UnisonoLM.from_pretrained(os.path.join(out, "checkpoints", "step_00000003"))
    assert m.head_w.flatten()[:5].tolist() == torch.tensor(r0["params"]["head_w"]).flatten()[:5].tolist()
    rows = [json.loads(r) for r in open(os.path.join(out, "log.jsonl"))]
    assert [r["step"] for r in rows] == [1, 2, 3] and "val_loss/copy" in rows[-1]


@pytest.mark.slow
def test_two_process_fsdp2_trains_and_saves(tmp_path):
    out, r0, r1 = _run(tmp_path, fsdp=True)
    for k in r0["params"]:
        assert r0["params"][k] == r1["params"][k], k
    from unisono.lm import UnisonoLM

    m = UnisonoLM.from_pretrained(os.path.join(out, "checkpoints", "step_00000003"))
    assert m.head_w.flatten()[:5].tolist() == torch.tensor(r0["params"]["head_w"]).flatten()[:5].tolist()
