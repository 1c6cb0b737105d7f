"""Live training curves in TensorBoard: event files in <run>/tensorboard/, written with
torch.utils.tensorboard (scalars per epoch, pictures at each evaluation). Read them with
`tensorboard --logdir runs`. metrics.csv, metrics.json and the PNGs stay the record of a run;
this is for watching one."""

from pathlib import Path

import torch

FOLDER = "tensorboard"


class Board:
    """One run's TensorBoard writer (rank 0 only). A resumed run adds a new event file to the
    same folder; TensorBoard shows them as one run."""

    def __init__(self, run_path: Path):
        # imported here: tensorboard takes a second to import, and only a run that writes
        # event files needs it
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(Path(run_path) / FOLDER))

    def scalars(self, epoch: int, values: dict) -> None:
        """Every number in values (e.g. {"train/recon": 3.1, "val/rel_acc_data": 0.9})."""
        for key, value in values.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                self.writer.add_scalar(key, value, epoch)
        self.writer.flush()

    def pictures(self, epoch: int, tag: str, images: torch.Tensor) -> None:
        """images (rows, cols, C, H, W) in [0, 1] as one grid picture."""
        from torchvision.utils import make_grid  # see plots.image_grid on why imported here

        grid = make_grid(images.flatten(0, 1).float().cpu().clamp(0, 1), nrow=images.shape[1],
                         padding=2, pad_value=1.0)
        self.writer.add_image(tag, grid, epoch)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
