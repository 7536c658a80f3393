"""benchmarks/bench_train.py: the configuration each side of the comparison gets."""

from benchmarks.bench_train import build_parser, make_cfg


def test_bf16_puts_our_rollouts_and_update_in_bfloat16_and_float32_stays_the_default():
    plain = make_cfg(build_parser().parse_args(["--dataset", "generated"]), "generated")
    assert (plain.rollout_dtype, plain.update_dtype, plain.dtype) == (None, None, "float32")
    bf16 = make_cfg(build_parser().parse_args(["--dataset", "generated", "--bf16"]), "generated")
    assert (bf16.rollout_dtype, bf16.update_dtype, bf16.dtype) == ("bfloat16", "bfloat16", "float32")
