"""ROS 2 interop without a ROS install: the robot link over DDS (``cyclonedds``), as ROS 2 names and types it.

``edge.ros2.link.Ros2Link`` is a robot link like ``firmware_bridge.link.Link``: the actuator's 20 Hz setpoints
go out as ``geometry_msgs/Twist`` on ``/cmd_vel`` and ``/odom`` (``nav_msgs/Odometry``) comes back as telemetry.
``edge.ros2.camera`` publishes the camera as ``sensor_msgs/CompressedImage``; ``edge.ros2.types`` holds the
ROS 2 message types as DDS structs. Nothing here imports ``cyclonedds`` until a
link is made (``pip install 'voxedge[ros2]'``).
"""
