"""The demo brand: 贝贝乐, a mother-and-baby chain, generated for a seed (``siyu demo``,
benchmarks, tests). See ``siyu.demo.generator``."""
