"""Old import path of the 3D U-Net, kept because pipeline folders saved before the move name it in
their `model_index.json` (`["magicvideo.unet_3d", "MagicVideoUNet3D"]`)."""

from .models.unet_3d import MagicVideoUNet3D, MagicVideoUNet3DOutput  # noqa: F401
