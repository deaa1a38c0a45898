"""The benchmark harness behind `dimdiff bench`: sampling cost, training cost and quality at
equal budget for every registered method, measured side by side in one run.

    from dimdiff.bench import available_methods, sampling_bench, SamplingOptions
    from dimdiff.config import Config
    result = sampling_bench(available_methods(Config()), SamplingOptions(batch=4, repeats=3))

The quality benchmark (`dimdiff.bench.quality`) trains models, with the trainer its caller hands in
(`quality_bench(methods, options, trainer=dimdiff.train.loop.train)`), and is imported on its own.
"""

from dimdiff.bench.environment import environment_record, machine_summary
from dimdiff.bench.registry import REFERENCE_KEY, BenchMethod, available_methods, select_methods
from dimdiff.bench.sampling import SamplingOptions, sampling_bench
from dimdiff.bench.training import TrainingOptions, training_bench

__all__ = [
    "REFERENCE_KEY", "BenchMethod", "SamplingOptions", "TrainingOptions", "available_methods", "environment_record",
    "machine_summary", "sampling_bench", "select_methods", "training_bench",
]  # fmt: skip
