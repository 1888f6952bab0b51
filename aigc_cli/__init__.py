"""aigc: text, images and speech from pretrained Hugging Face models, in shell pipelines."""

__version__ = "0.1.0"
