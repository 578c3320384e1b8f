"""Datasets and the input pipeline.

Every dataset produces the same example features (`features.example_features`),
so one pipeline and one evaluator serve them all.

Modules
  builders     the dataset registry (family -> TFDS builder class) and `build`.
  human36m     the `human36m` builder; h36m_files finds and reads the download,
               h36m_sides decides left and right, crops cuts the person crops.
  synthetic    the `c2f_synthetic` builder (poses, BVH, renderer).
  stand_ins    in-memory stand-ins of the stored datasets, for the benchmark.
  pipeline     the tf.data input pipeline (augment: its per-example ops;
               data_config: its config fields); stats: bone lengths, mean pose.
"""
