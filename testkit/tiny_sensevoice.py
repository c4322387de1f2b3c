"""A SenseVoiceSmall model folder with random weights, made on the spot.

The real model is a 900 MB download and the tests run offline, so they load this instead: the
same folder layout as the published `iic/SenseVoiceSmall` (config.yaml, configuration.json,
model.pt, am.mvn, the BPE model), the same architecture, and funasr's own loader reads it through
the same path. With random weights the text is noise; what it proves is that loading, feature
extraction, batching and decoding work. `real_size=True` keeps the published sizes (50 + 20
SAN-M blocks of 512, a 25,055-token vocabulary) for timing, still with random weights.

funasr is imported inside the function only: it takes many seconds to import.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

# The tags SenseVoice writes before the text: language, emotion, audio event, text normalisation.
# funasr decodes them as plain pieces of the BPE model, so they are user symbols there.
SPECIAL_TOKENS = tuple(f"<|{name}|>" for name in (
    "zh", "en", "yue", "ja", "ko", "nospeech",
    "HAPPY", "SAD", "ANGRY", "NEUTRAL", "FEARFUL", "DISGUSTED", "SURPRISED", "EMO_UNKNOWN",
    "Speech", "BGM", "Applause", "Laughter", "Cry", "Sneeze", "Breath", "Cough", "Sing",
    "Speech_Noise", "GBG", "Event_UNK",
    "withitn", "woitn",
))

BPE_FILE = "chn_jpn_yue_eng_ko_spectok.bpe.model"  # the published model's file name
CMVN_FILE = "am.mvn"
REAL_VOCAB = 25055  # the published tokenizer's size; the CTC output layer follows it
TINY_VOCAB = 100
SEED = 20240707

N_MELS, LFR_M, LFR_N = 80, 7, 6
FEATURE_DIM = N_MELS * LFR_M  # the encoder's input: 7 stacked 80-bin frames

TRAINING_LINES = [
    "The weather is nice today and the sun is shining.",
    "Please open the window before you leave the room.",
    "My brother bought a new car last week.",
    "She likes to read books in the garden.",
    "The train to the city leaves from the second platform.",
]

TINY_ENCODER = {"output_size": 32, "attention_heads": 2, "linear_units": 64,
                "num_blocks": 2, "tp_blocks": 1}
REAL_ENCODER = {"output_size": 512, "attention_heads": 4, "linear_units": 2048,
                "num_blocks": 50, "tp_blocks": 20}


def make_tiny_sensevoice(folder: Path, real_size: bool = False) -> Path:
    """Write a SenseVoiceSmall folder that `funasr.AutoModel(model=str(folder))` loads; the same
    seed gives the same files."""
    folder.mkdir(parents=True, exist_ok=True)
    vocab = REAL_VOCAB if real_size else TINY_VOCAB
    (folder / BPE_FILE).write_bytes(_bpe_model(vocab))
    (folder / CMVN_FILE).write_text(_cmvn_text(FEATURE_DIM))
    config = _config(REAL_ENCODER if real_size else TINY_ENCODER)
    (folder / "config.yaml").write_text(_yaml(config))
    (folder / "configuration.json").write_text(json.dumps(_configuration(), indent=2) + "\n")
    _save_weights(folder / "model.pt", config, vocab)
    return folder


def _bpe_model(vocab_size: int) -> bytes:
    """A BPE model whose first pieces are <unk> (0, the CTC blank), <s>, </s> and the tags, as in
    the published one; filler symbols pad the real-size vocabulary to its exact length."""
    import sentencepiece as spm

    bpe_pieces = 69  # what a few sentences of English can give without running dry
    fillers = vocab_size - 3 - len(SPECIAL_TOKENS) - bpe_pieces
    user_symbols = [*SPECIAL_TOKENS, *(f"<|filler{i}|>" for i in range(fillers))]
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(TRAINING_LINES), model_writer=model, vocab_size=vocab_size,
        model_type="bpe", user_defined_symbols=user_symbols, character_coverage=1.0,
        num_threads=1, minloglevel=2)
    return model.getvalue()


def _cmvn_text(dim: int) -> str:
    """Global mean/variance normalisation in the Kaldi nnet1 text form funasr's WavFrontend
    reads: an <AddShift> row (minus the mean) and a <Rescale> row (one over the deviation).
    Round numbers close to what log-mel features of speech have."""
    shift = " ".join(["-10.0"] * dim)
    scale = " ".join(["0.25"] * dim)
    return (f"<Nnet>\n<Splice> {dim} {dim}\n[ 0 ]\n"
            f"<AddShift> {dim} {dim}\n<LearnRateCoef> 0 [ {shift} ]\n"
            f"<Rescale> {dim} {dim}\n<LearnRateCoef> 0 [ {scale} ]\n</Nnet>\n")


def _config(encoder_sizes: dict[str, int]) -> dict[str, Any]:
    """The published config.yaml's model, encoder, tokenizer and frontend sections; the file
    paths stay null here, as there, and configuration.json names the files."""
    return {
        "encoder": "SenseVoiceEncoderSmall",
        "encoder_conf": {
            **encoder_sizes, "dropout_rate": 0.1, "positional_dropout_rate": 0.1,
            "attention_dropout_rate": 0.1, "input_layer": "pe",
            "pos_enc_class": "SinusoidalPositionEncoder", "normalize_before": True,
            "kernel_size": 11, "sanm_shfit": 0, "selfattention_layer_type": "sanm",
        },
        "model": "SenseVoiceSmall",
        "model_conf": {"length_normalized_loss": True, "sos": 1, "eos": 2, "ignore_id": -1},
        "tokenizer": "SentencepiecesTokenizer",
        "tokenizer_conf": {"bpemodel": None, "unk_symbol": "<unk>", "split_with_space": True},
        "frontend": "WavFrontend",
        "frontend_conf": {"fs": 16000, "window": "hamming", "n_mels": N_MELS, "frame_length": 25,
                          "frame_shift": 10, "lfr_m": LFR_M, "lfr_n": LFR_N, "cmvn_file": None},
    }


def _configuration() -> dict[str, Any]:
    """configuration.json: how funasr resolves the folder's files, relative to the folder, so it
    can be moved or copied."""
    return {
        "framework": "pytorch",
        "task": "auto-speech-recognition",
        "model": {"type": "funasr"},
        "pipeline": {"type": "funasr-pipeline"},
        "file_path_metas": {
            "init_param": "model.pt",
            "config": "config.yaml",
            "tokenizer_conf": {"bpemodel": BPE_FILE},
            "frontend_conf": {"cmvn_file": CMVN_FILE},
        },
    }


def _yaml(config: dict[str, Any]) -> str:
    import yaml

    return str(yaml.safe_dump(config, sort_keys=False))


def _save_weights(path: Path, config: dict[str, Any], vocab_size: int) -> None:
    """Build funasr's own SenseVoiceSmall with seeded random weights and save its state_dict,
    so every key and shape is the one its loader expects. The caller's RNG state is kept."""
    import torch
    from funasr.models.sense_voice.model import SenseVoiceSmall

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED)
        model = SenseVoiceSmall(encoder=config["encoder"], encoder_conf=config["encoder_conf"],
                                input_size=FEATURE_DIM, vocab_size=vocab_size,
                                **config["model_conf"])
    torch.save(model.state_dict(), path)
