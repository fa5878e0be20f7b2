"""Hugging Face transformers models as users load them (issue 16), built from small configs (no downloads): each
builder returns the model and ``inputs(batch, length, seed)``, the keyword arguments of a call. Used by
tests/corpus/test_transformers.py (correctness) and bench/real_models.py (speed and compile time)."""
import torch
import transformers


def tokens(vocab: int, batch: int, length: int, seed: int) -> dict:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, vocab, (batch, length), generator=g)
    mask = torch.ones(batch, length, dtype=torch.long)
    mask[0, length // 2:] = 0  # one padded row
    return {"input_ids": ids, "attention_mask": mask}


def bert():
    cfg = transformers.BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                                  vocab_size=300, max_position_embeddings=64)
    return transformers.BertModel(cfg), lambda b, s, seed: tokens(300, b, s, seed)


def gpt2_lm_head():
    cfg = transformers.GPT2Config(n_embd=32, n_layer=2, n_head=4, vocab_size=300, n_positions=64,
                                  bos_token_id=1, eos_token_id=2)
    return transformers.GPT2LMHeadModel(cfg), lambda b, s, seed: {"input_ids": tokens(300, b, s, seed)["input_ids"]}


def llama():
    cfg = transformers.LlamaConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                   intermediate_size=64, vocab_size=300, max_position_embeddings=64,
                                   bos_token_id=1, eos_token_id=2, pad_token_id=0)
    return transformers.LlamaModel(cfg), lambda b, s, seed: tokens(300, b, s, seed)


def vit():
    cfg = transformers.ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                                 image_size=16, patch_size=4)
    return transformers.ViTModel(cfg), lambda b, s, seed: {
        "pixel_values": torch.randn(b, 3, 16, 16, generator=torch.Generator().manual_seed(seed))}


def t5_encoder():
    cfg = transformers.T5Config(d_model=32, num_layers=2, num_heads=4, d_ff=64, d_kv=8, vocab_size=300)
    return transformers.T5EncoderModel(cfg), lambda b, s, seed: tokens(300, b, s, seed)


def whisper_encoder():
    cfg = transformers.WhisperConfig(d_model=32, encoder_layers=2, decoder_layers=1, encoder_attention_heads=4,
                                     decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=64,
                                     num_mel_bins=8, max_source_positions=16, vocab_size=300, pad_token_id=0,
                                     bos_token_id=1, eos_token_id=2, decoder_start_token_id=1)
    return transformers.WhisperModel(cfg).get_encoder(), lambda b, s, seed: {
        "input_features": torch.randn(b, 8, 32, generator=torch.Generator().manual_seed(seed))}


CORPUS = [bert, gpt2_lm_head, llama, vit, t5_encoder, whisper_encoder]
