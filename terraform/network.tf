# Traffic allowed, and nothing else:
#   internet  -> ALB        443/tcp, and 80/tcp answered by a redirect to 443
#   ALB       -> nodes      8080/tcp (bigtap serve)
#   nodes     -> store      6379/tcp (TLS)
#   consumers -> store      6379/tcp (TLS)
#   Prometheus -> nodes 8080, consumers 9091 (scrape inside the VPC)
#   load generators -> nodes 8080 (only while var.loadgen_security_group_ids
#                      lists them: the pre-launch load test)
#   nodes, consumers -> 443 (SSM, Auto Scaling; consumers also the order backend)
#   nodes, consumers -> S3 prefix list 443 (the release binary at boot)
# The probes (/healthz, /readyz) and /metrics are reachable inside the VPC
# only: the node port admits the ALB (health checks) and Prometheus, and the
# public listener answers 404 for those paths.
# The store has no egress at all.

# S3's addresses in this region. A gateway endpoint routes S3 traffic to
# these public addresses, so an egress rule for the VPC CIDR alone would
# break the release download: S3 gets its own rule.
data "aws_ec2_managed_prefix_list" "s3" {
  name = "com.amazonaws.${var.aws_region}.s3"
}

resource "aws_security_group" "alb" {
  name        = "${var.name}-alb"
  description = "bigtap public load balancer"
  vpc_id      = var.vpc_id
}

resource "aws_security_group" "node" {
  #checkov:skip=CKV2_AWS_5: Attached through aws_launch_template.tier (for_each over local.tiers in compute.tf), a reference the graph check does not follow.
  name        = "${var.name}-node"
  description = "bigtap serve nodes"
  vpc_id      = var.vpc_id
}

resource "aws_security_group" "consumer" {
  #checkov:skip=CKV2_AWS_5: Attached through aws_launch_template.tier (for_each over local.tiers in compute.tf), a reference the graph check does not follow.
  name        = "${var.name}-consumer"
  description = "bigtap orders consumers"
  vpc_id      = var.vpc_id
}

resource "aws_security_group" "store" {
  name        = "${var.name}-store"
  description = "bigtap MemoryDB store"
  vpc_id      = var.vpc_id
}

# ---- ALB ----------------------------------------------------------------------

resource "aws_vpc_security_group_ingress_rule" "alb_https" {
  for_each = toset(var.alb_ingress_cidr_blocks)

  security_group_id = aws_security_group.alb.id
  description       = "Buyers over HTTPS"
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
  cidr_ipv4         = each.value
}

resource "aws_vpc_security_group_ingress_rule" "alb_http_redirect" {
  #checkov:skip=CKV_AWS_260: Port 80 on the public ALB only answers a 301 to HTTPS (aws_lb_listener.http_redirect); buyers who type http:// must reach that redirect, and no request is forwarded in clear.
  for_each = toset(var.alb_ingress_cidr_blocks)

  security_group_id = aws_security_group.alb.id
  description       = "Plain HTTP, answered with a redirect to HTTPS"
  ip_protocol       = "tcp"
  from_port         = 80
  to_port           = 80
  cidr_ipv4         = each.value
}

resource "aws_vpc_security_group_egress_rule" "alb_to_node" {
  security_group_id            = aws_security_group.alb.id
  description                  = "Forward to bigtap serve"
  ip_protocol                  = "tcp"
  from_port                    = 8080
  to_port                      = 8080
  referenced_security_group_id = aws_security_group.node.id
}

# ---- nodes --------------------------------------------------------------------

resource "aws_vpc_security_group_ingress_rule" "node_from_alb" {
  security_group_id            = aws_security_group.node.id
  description                  = "Requests and health checks from the ALB"
  ip_protocol                  = "tcp"
  from_port                    = 8080
  to_port                      = 8080
  referenced_security_group_id = aws_security_group.alb.id
}

resource "aws_vpc_security_group_ingress_rule" "node_from_prometheus" {
  for_each = toset(var.prometheus_security_group_ids)

  security_group_id            = aws_security_group.node.id
  description                  = "Prometheus scrapes /metrics directly"
  ip_protocol                  = "tcp"
  from_port                    = 8080
  to_port                      = 8080
  referenced_security_group_id = each.value
}

resource "aws_vpc_security_group_ingress_rule" "node_from_loadgen" {
  for_each = toset(var.loadgen_security_group_ids)

  security_group_id            = aws_security_group.node.id
  description                  = "Load generator (loadtest/run --target): one node, its admin API and metrics"
  ip_protocol                  = "tcp"
  from_port                    = 8080
  to_port                      = 8080
  referenced_security_group_id = each.value
}

resource "aws_vpc_security_group_egress_rule" "node_to_store" {
  security_group_id            = aws_security_group.node.id
  description                  = "Redis protocol over TLS to MemoryDB"
  ip_protocol                  = "tcp"
  from_port                    = 6379
  to_port                      = 6379
  referenced_security_group_id = aws_security_group.store.id
}

resource "aws_vpc_security_group_egress_rule" "node_s3" {
  security_group_id = aws_security_group.node.id
  description       = "HTTPS to S3 (release binary at boot)"
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
  prefix_list_id    = data.aws_ec2_managed_prefix_list.s3.id
}

resource "aws_vpc_security_group_egress_rule" "consumer_s3" {
  security_group_id = aws_security_group.consumer.id
  description       = "HTTPS to S3 (release binary at boot)"
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
  prefix_list_id    = data.aws_ec2_managed_prefix_list.s3.id
}

resource "aws_vpc_security_group_egress_rule" "node_https" {
  for_each = toset(var.aws_api_egress_cidr_blocks)

  security_group_id = aws_security_group.node.id
  description       = "HTTPS to SSM (secrets at start) and Auto Scaling (liveness)"
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
  cidr_ipv4         = each.value
}

# ---- consumers ----------------------------------------------------------------

resource "aws_vpc_security_group_ingress_rule" "consumer_from_prometheus" {
  for_each = toset(var.prometheus_security_group_ids)

  security_group_id            = aws_security_group.consumer.id
  description                  = "Prometheus scrapes the consumer metrics listener"
  ip_protocol                  = "tcp"
  from_port                    = 9091
  to_port                      = 9091
  referenced_security_group_id = each.value
}

resource "aws_vpc_security_group_egress_rule" "consumer_to_store" {
  security_group_id            = aws_security_group.consumer.id
  description                  = "Redis protocol over TLS to MemoryDB"
  ip_protocol                  = "tcp"
  from_port                    = 6379
  to_port                      = 6379
  referenced_security_group_id = aws_security_group.store.id
}

resource "aws_vpc_security_group_egress_rule" "consumer_https" {
  for_each = toset(var.aws_api_egress_cidr_blocks)

  security_group_id = aws_security_group.consumer.id
  description       = "HTTPS to SSM, Auto Scaling and the order backend"
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
  cidr_ipv4         = each.value
}

# ---- store --------------------------------------------------------------------

resource "aws_vpc_security_group_ingress_rule" "store_from_node" {
  security_group_id            = aws_security_group.store.id
  description                  = "bigtap serve nodes"
  ip_protocol                  = "tcp"
  from_port                    = 6379
  to_port                      = 6379
  referenced_security_group_id = aws_security_group.node.id
}

resource "aws_vpc_security_group_ingress_rule" "store_from_consumer" {
  security_group_id            = aws_security_group.store.id
  description                  = "bigtap orders consumers"
  ip_protocol                  = "tcp"
  from_port                    = 6379
  to_port                      = 6379
  referenced_security_group_id = aws_security_group.consumer.id
}
