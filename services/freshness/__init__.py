"""What keeps the tiers' versions current: the version index, the refresher that polls
the store's change feed, and the fleet leadership (lease) that lets one host poll for
all."""
