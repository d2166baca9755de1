"""Where a race's images come from: the data sources a student may pick, the request a shared cache keys on, and
the model's config fitted to the images (size, channels, classes)."""
from __future__ import annotations

import enum
from dataclasses import dataclass, field, replace

import torch
from torch.utils.data import Dataset, TensorDataset

from resviz import models as M
from resviz.inputs import data


class DataSource(enum.Enum):
    """Where the race's images come from; the value is the data's name in labels ("trained ... on CIFAR10")."""
    BUILTIN = "Built-in shapes"
    CIFAR10 = "CIFAR10"
    MNIST = "MNIST"
    FASHION_MNIST = "FashionMNIST"
    ZIP = "My image folder"
    TEACHER = "The teacher's image folders"

    @property
    def torchvision(self) -> bool:
        return self.value in data.TORCHVISION_NAMES

    @property
    def shared(self) -> bool:
        """Whether the loaded images can be shared by the whole class (a student's own zip is not)."""
        return self is not DataSource.ZIP


def offered_sources(teacher_folders: bool) -> list[DataSource]:
    """The data a student may race on: the teacher's folders only where the teacher named some."""
    return [s for s in DataSource if teacher_folders or s is not DataSource.TEACHER]


@dataclass(frozen=True)
class DataRequest:
    """The images a race asks for; hashable, so a shared cache can key on it (the zip's bytes excepted)."""
    source: DataSource = DataSource.BUILTIN
    size: int = 32
    channels: int = 3
    download: bool = False  # torchvision sets only: fetch them if missing
    folder: str = ""  # the teacher's folder, by name
    upload: bytes | None = field(default=None, compare=False, repr=False)  # the student's zip

    @classmethod
    def for_race(cls, cfg: M.ResNetConfig, source: DataSource, download: bool = False, folder: str = "",
                 upload: bytes | None = None) -> DataRequest:
        """The images to race ``cfg`` on, at the size and channels ``data_shape_for`` picks."""
        size, channels = data_shape_for(cfg, source)
        return cls(source, size, channels, download, folder, upload)

    @property
    def key(self) -> tuple:
        """What the loaded images depend on, as plain values (a shared cache's key)."""
        return ("race-data", self.source.value, self.size, self.channels, self.download, self.folder)

    def load(self, report: list[str] | None = None) -> tuple[TensorDataset, TensorDataset, list[str]]:
        """``(train, test, class_names)``; DatasetError in plain words when the data cannot be had."""
        if self.source is DataSource.BUILTIN:
            return data.builtin_dataset(n_train=4000, n_test=1000, size=self.size, channels=self.channels, seed=0)
        if self.source is DataSource.TEACHER:
            return data.load_image_folder(data.teacher_folders()[self.folder], self.size, self.channels)
        if self.source is DataSource.ZIP:
            if self.upload is None:
                raise data.DatasetError("Upload a zip of an image folder first.")
            return data.load_image_folder(self.upload, self.size, self.channels, report=report)
        return data.load_torchvision_dataset(self.source.value, download=self.download)


def _tensors(ds: Dataset) -> tuple[torch.Tensor, torch.Tensor]:
    if isinstance(ds, TensorDataset):
        return ds.tensors[0], ds.tensors[1]
    xs, ys = zip(*(ds[i] for i in range(len(ds))))
    return torch.stack(xs), torch.as_tensor(ys)


RACE_IMAGE_SIZE = 16  # built-in images for the race: 4x fewer pixels than 32, so 3-4x more steps per second; the
#                      CIFAR nets are convolutions and a global average pool, so they run unchanged (8x8 -> 4x4 maps
#                      in the last stage)


def data_shape_for(cfg: M.ResNetConfig, source: DataSource = DataSource.BUILTIN) -> tuple[int, int]:
    """(size, channels) to draw the race's images at: built-in ones at ``RACE_IMAGE_SIZE``; a folder's at the
    model's own size where cheap, else 32x32."""
    size = cfg.input_size if 16 <= cfg.input_size <= 64 else 32
    if source is DataSource.BUILTIN:
        size = RACE_IMAGE_SIZE
    return size, cfg.in_channels if cfg.in_channels in (1, 3) else 3


def fit_config(cfg: M.ResNetConfig, train: Dataset, num_classes: int) -> tuple[M.ResNetConfig, list[str]]:
    """``cfg`` rebuilt to take this data (channels, size, classes), and plain-words notes on what changed."""
    x = _tensors(train)[0]
    channels, size = int(x.shape[1]), int(x.shape[-1])
    fitted = replace(cfg, residual=True, in_channels=channels, input_size=size, num_classes=num_classes)
    notes = []
    changes = [f"{what} {new} instead of {old}" for what, old, new in
               (("input channels:", cfg.in_channels, channels), ("input size:", cfg.input_size, size),
                ("classes:", cfg.num_classes, num_classes)) if old != new]
    if changes:
        notes.append("The model was rebuilt to fit the data (" + "; ".join(changes) + "); everything else is "
                     "the model you picked.")
    if cfg.stem == "imagenet" and size <= 64:
        notes.append(f"An ImageNet stem (7x7 stride-2 conv and max-pool) shrinks {size}x{size} images 4x at once: "
                     "it trains, but slowly and poorly. CIFAR presets are made for small images.")
    return fitted, notes
