"""The manager: the control plane above the group controller."""
