"""Pictures of what a NeRF renders: labelled view panels, depth colour maps (numpy and
matplotlib only)."""
