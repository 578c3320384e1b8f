"""The built-in synthetic dataset `c2f_synthetic`: procedural or motion-capture poses, rendered.

Modules
  poses    procedural 17-joint poses in pose families (the `action` label).
  bvh      BVH parsing, forward kinematics and conversion to the 17 joints.
  render   an OpenCV painter's-algorithm body renderer with random backgrounds.
  builder  the TFDS builder (import it to register `c2f_synthetic`).
"""
