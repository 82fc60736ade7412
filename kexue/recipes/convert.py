"""``kexue convert bert4keras``: a bert4keras TF checkpoint to an HF-layout folder that kexue (and, for the
families it has, transformers) loads (:mod:`kexue.models.bert4keras`), written as one unit with its
``manifest.json`` (:func:`kexue.io.write_folder`)."""
from __future__ import annotations

import sys

from kexue.io import folder_info, write_folder
from kexue.models.bert4keras import MODELS, convert
from kexue.recipes import args as at


def main(argv: list[str] | None = None) -> int:
    p = at.ArgumentParser(prog="kexue convert bert4keras",
                                description="bert4keras TF checkpoint -> HF-layout folder for kexue")
    p.add_argument("--config", required=True, help="bert4keras config.json")
    p.add_argument("--checkpoint", required=True, help="TF checkpoint prefix (e.g. bert_model.ckpt) or its folder")
    p.add_argument("--model", required=True, choices=sorted(MODELS), help="bert4keras model name")
    p.add_argument("--application", default="encoder", choices=["encoder", "lm", "unilm"], help="what the converted model computes: encoder, causal LM or UniLM seq2seq")
    p.add_argument("--with-pool", nargs="?", const="tanh", default=None, metavar="ACT",
                   help="keep the pooler ([CLS] dense + ACT, tanh by default; SimBERT: linear)")
    p.add_argument("--with-mlm", action="store_true", help="keep the MLM head")
    p.add_argument("--with-discriminator", action="store_true",
                   help="electra: keep the replaced-token detection head (bert4keras with_discriminator)")
    p.add_argument("--hierarchical-alpha", type=float, default=None,
                   help="bert4keras hierarchical_position (True = 0.4)")
    p.add_argument("--cond-hidden-act", default=None,
                   help="bert4keras layer_norm_cond_hidden_act of Conditional LayerNorm (default linear)")
    p.add_argument("--decoder-start-id", type=int, default=None, help="T5: decoder start token (T5 PEGASUS: [CLS])")
    p.add_argument("--eos-id", type=int, default=None, help="T5: end token (T5 PEGASUS: [SEP])")
    p.add_argument("--keep-tokens", default=None, metavar="FILE",
                   help="JSON list of the token ids to keep (bert4keras keep_tokens): the vocabulary shrinks to them")
    p.add_argument("--compound-tokens", default=None, metavar="FILE",
                   help="JSON list of new tokens, each the (weighted) mean of kept tokens (bert4keras compound_tokens)")
    p.add_argument("--vocab", default=None, help="vocab.txt to copy into the folder (trimmed by --keep-tokens)")
    p.add_argument("--cased", action="store_true", help="the tokenizer keeps case (do_lower_case=false)")
    p.add_argument("--out", required=True, help="output folder")
    argv = list(argv or [])
    if not argv or argv[0] != "bert4keras":
        p.error("the source format comes first: kexue convert bert4keras --config ... (known: bert4keras)")
    args = p.parse_args(argv[1:])
    options = {"with_pool": True if args.with_pool else None, "with_mlm": args.with_mlm or None,
               "with_discriminator": args.with_discriminator or None,
               "pool_act": args.with_pool if args.with_pool not in (None, "tanh") else None,
               "hierarchical_alpha": args.hierarchical_alpha, "cond_hidden_act": args.cond_hidden_act}
    generator = args.application != "encoder" or MODELS.get(args.model) in ("t5", "gpt", "gpt2_ml")  # LMs always
    info = folder_info("generator" if generator else "encoder", pooling=None if generator else "mean",
                       post_processing=None if generator else {"normalize": {}})
    try:
        with write_folder(args.out, info, overwrite=True) as stage:
            convert(args.config, args.checkpoint, args.model, stage, args.application, args.vocab,
                    not args.cased, args.decoder_start_id, args.eos_id, args.keep_tokens, args.compound_tokens,
                    **options)
    except (ImportError, ValueError, FileNotFoundError) as e:
        print(f"kexue convert bert4keras: {e}", file=sys.stderr)
        return 2
    print(f"wrote {args.out}")
    return 0
