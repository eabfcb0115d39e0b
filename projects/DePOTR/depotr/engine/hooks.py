"""Training hooks."""

from detectron2.engine import HookBase
from detectron2.utils import comm
from detectron2.utils.env import seed_all_rng


class IterationSeedHook(HookBase):
    """Seeds Python, NumPy and torch before every iteration from (seed, iteration, rank), so that
    the model's random choices (box jitter, dropout) depend on the iteration only and a resumed run
    draws what the uninterrupted run drew (docs/resume.md; the data loader seeds each sample itself,
    ``depotr.engine.trainer.SeededSampleStream``).
    """

    def __init__(self, seed: int):
        self._seed = seed

    def before_step(self) -> None:
        seed = (self._seed * 1_000_003 + self.trainer.iter * 7919 + comm.get_rank()) % (2**31)
        seed_all_rng(seed)
