"""subwatch: watch an inbox for audio and video, write subtitles to an outbox."""

__version__ = "0.1.0"
