"""The MUSER towers (waveform, spectrogram, text) and the tri-modal model that joins them."""

from muser.models.muser import MUSER, check_audio
from muser.models.spectrogram import SpectrogramEncoder
from muser.models.text import TextEncoder
from muser.models.waveform import WaveformEncoder

__all__ = ["MUSER", "SpectrogramEncoder", "TextEncoder", "WaveformEncoder", "check_audio"]
