"""The data-parallel test cases, run twice: by ``mpiexec -n N python distributed_cases.py OUT``
(every rank runs every case over the real communicator; rank 0 writes ``OUT/<case>.npz``) and by
``tests/test_distributed.py`` in one process (``comm=None``), which compares the two."""

from __future__ import annotations

import os
import sys

import numpy as np

# (name, preset, dtype, preset keywords, trainer keywords, Adam keywords)
CASES = [
    ("two_layer_net-float64", "two_layer_net", "float64", {}, {}, {}),
    ("two_layer_net-float32", "two_layer_net", "float32", {}, {}, {}),
    ("multi_layer_net-float64", "multi_layer_net", "float64", {}, {}, {}),
    ("multi_layer_net-float32", "multi_layer_net", "float32", {}, {}, {}),
    ("simple_convnet-float64", "simple_convnet", "float64", {}, {}, {}),
    ("simple_convnet-float32", "simple_convnet", "float32", {}, {}, {}),
    # clipped to a norm every step reaches, and L2 weight decay: both must see the reduced gradient
    ("clip_and_decay-float64", "two_layer_net", "float64", {}, {}, {"clip_norm": 0.05, "weight_decay": 0.01}),
    ("sync_batchnorm-float64", "multi_layer_net", "float64", {"batchnorm": True}, {"sync_batchnorm": True}, {}),
    # random shifts: each rank shifts its shard by its part of the global batch's draws
    ("augment-float64", "simple_convnet", "float64", {}, {"augment": 2}, {}),
]
STEPS, BATCH = 20, 100


def load_data(conv: bool):
    from accelnet.data import load

    return load("mnist", flatten=not conv, progress=False)


def run_case(case, comm=None) -> dict:
    """Train ``STEPS`` steps of the case's model at global batch ``BATCH`` (Adam, seed 0) and
    evaluate it on the test set; returns the parameters, the accuracy and the last loss."""
    from accelnet.optim import Adam
    from accelnet.presets import get_preset
    from accelnet.train import Trainer

    from accelnet.augment import RandomShift

    name, preset, dtype, model_kw, trainer_kw, adam_kw = case
    if "augment" in trainer_kw:
        trainer_kw = {**trainer_kw, "augment": RandomShift(trainer_kw["augment"])}
    data = load_data(preset.endswith("convnet"))
    model = get_preset(preset)(dtype=dtype, seed=0, **model_kw)
    trainer = Trainer(model, Adam(model, **adam_kw), data, batch_size=BATCH, epochs=1, max_steps=STEPS, progress=False,
                      comm=comm, train_eval_samples=1000, log_every=10, **trainer_kw)
    trainer.fit()
    return {"params": model.backend.to_numpy(model.arena.data).copy(),
            "test_acc": trainer.evaluate(data.x_test, data.t_test),
            "loss": trainer.history[-1]["loss"]}


def replica_mismatch(comm) -> str:
    """Train two steps, change one parameter on the last rank only, check the replicas: the
    message every rank raised ('' if none did)."""
    from accelnet.distributed import ReplicaMismatch
    from accelnet.optim import SGD
    from accelnet.presets import two_layer_net
    from accelnet.train import Trainer

    model = two_layer_net(seed=0)
    trainer = Trainer(model, SGD(model), load_data(False), batch_size=BATCH, max_steps=2, progress=False, comm=comm,
                      train_eval_samples=100)
    trainer.fit()
    if comm.rank == comm.size - 1:
        model.arena.data[0] += 1e-7
    try:
        trainer.check_replicas()
    except ReplicaMismatch as exc:
        return str(exc)
    return ""


def dropout_mask_checksums(comm) -> list:
    """Each rank's first dropout mask of a multi_layer_net step, as a checksum."""
    from accelnet.distributed import checksum
    from accelnet.optim import SGD
    from accelnet.presets import multi_layer_net
    from accelnet.train import Trainer

    model = multi_layer_net(dropout=0.5, seed=0)
    trainer = Trainer(model, SGD(model), load_data(False), batch_size=BATCH, progress=False, comm=comm)
    x, t = next(iter(trainer.batches))
    model.loss(x, t)
    masks = [layer._mask for layer in model.layers if type(layer).__name__ == "Dropout"]
    return comm.allgather_obj(checksum(masks))


def main(out: str) -> None:
    from accelnet import distributed

    comm = distributed.init("cpu")
    for case in CASES:
        result = run_case(case, comm)
        if comm.rank == 0:
            np.savez(os.path.join(out, f"{case[0]}.npz"), **result)
    messages = comm.allgather_obj(replica_mismatch(comm))
    masks = dropout_mask_checksums(comm)
    if comm.rank == 0:
        with open(os.path.join(out, "replica_mismatch.txt"), "w") as f:
            f.write("\n".join(messages))
        with open(os.path.join(out, "dropout_masks.txt"), "w") as f:
            f.write("\n".join(map(str, masks)))


if __name__ == "__main__":
    main(sys.argv[1])
