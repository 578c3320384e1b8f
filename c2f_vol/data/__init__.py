"""Datasets and the input pipeline.

Every dataset produces the same example features (`features.example_features`),
so one pipeline and one evaluator serve them all.
"""
