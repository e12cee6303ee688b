"""Rig-only plugins for the local OpenStack Zed test cloud (scripts/openstack-cloud).

Installed by `scripts/openstack-cloud up` into /usr/local/lib/python3.X/dist-packages;
never used outside that rig. See docs/local-cloud.md.
"""
