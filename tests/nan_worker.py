"""Run by tests/test_distributed.py under torchrun: a model whose loss turns NaN on rank 1 alone,
at step 3, trained through the stage scripts' error handling (launch.run)."""

import torch

from ldm import distributed
from ldm.cli import StageParser, add_runtime_args
from ldm.launch import run
from ldm.train import TrainSettings, run_training


def main(args) -> None:
    model = torch.nn.Linear(2, 1)
    forward, rank = distributed.wrap(model), distributed.world().rank

    def step_loss(step):
        loss = forward(torch.ones(1, 2)).sum()
        return loss * (float("nan") if step >= 3 and rank == 1 else 1.0), {}

    run_training(model, step_loss, TrainSettings(10, batch_size=2, lr=0.1), log_interval=1, progress=False)


if __name__ == "__main__":
    parser = StageParser(__doc__)
    add_runtime_args(parser)
    run(parser, main)
