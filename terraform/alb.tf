resource "aws_lb" "public" {
  #checkov:skip=CKV_AWS_150: The stack lives only around a launch and is destroyed after it (RUNBOOK "Teardown"); deletion protection would make every teardown a two-step manual edit.
  #checkov:skip=CKV2_AWS_28: bigtap enforces per-buyer and per-address limits itself, in memory, before any store call; a WAF in the hot path adds latency and per-request cost at millions of requests per second. An existing web ACL can be attached with var.waf_web_acl_arn.
  #checkov:skip=CKV2_AWS_76: Follows from CKV2_AWS_28 (no WAF by default); the Log4j managed rule group protects Java services and bigtap is a Rust binary with no JNDI-style lookup in logging.
  name                       = "${var.name}-alb"
  load_balancer_type         = "application"
  internal                   = false
  subnets                    = var.public_subnet_ids
  security_groups            = [aws_security_group.alb.id]
  drop_invalid_header_fields = true
  desync_mitigation_mode     = "strictest"
  idle_timeout               = var.alb_idle_timeout_s # below bigtap's keep-alive idle timeout (var.node_idle_timeout_ms)
  enable_deletion_protection = false

  access_logs {
    bucket  = var.alb_access_logs_bucket
    prefix  = var.name
    enabled = true
  }
}

resource "aws_wafv2_web_acl_association" "public" {
  count = var.waf_web_acl_arn == null ? 0 : 1

  resource_arn = aws_lb.public.arn
  web_acl_arn  = var.waf_web_acl_arn
}

resource "aws_lb_target_group" "serve" {
  #checkov:skip=CKV_AWS_378: TLS ends at the ALB; the hop to the nodes stays inside the VPC on a port that only the ALB's security group may reach. Re-encrypting would put a certificate and a TLS handshake on every node for no gain in this threat model.
  name                 = "${var.name}-serve"
  port                 = 8080
  protocol             = "HTTP"
  vpc_id               = var.vpc_id
  target_type          = "instance"
  deregistration_delay = 30 # bigtap drains on SIGTERM; systemd allows it 40 s (TimeoutStopSec).

  health_check {
    # Readiness: 503 while the node cannot sell (store unreachable, scripts
    # not loaded). Only the target group acts on it, by sending no traffic;
    # the ASG replaces instances on liveness only (compute.tf).
    path                = "/readyz"
    port                = "traffic-port"
    protocol            = "HTTP"
    matcher             = "200"
    interval            = 5
    timeout             = 2
    healthy_threshold   = 2
    unhealthy_threshold = 2
  }
}

resource "aws_lb_listener" "https" {
  load_balancer_arn = aws_lb.public.arn
  port              = 443
  protocol          = "HTTPS"
  ssl_policy        = "ELBSecurityPolicy-TLS13-1-2-2021-06"
  certificate_arn   = var.certificate_arn

  default_action {
    type             = "forward"
    target_group_arn = aws_lb_target_group.serve.arn
  }
}

# Buyers who type http:// are sent to https://, nothing is served in clear.
resource "aws_lb_listener" "http_redirect" {
  #checkov:skip=CKV_AWS_2: This listener only redirects to HTTPS (301); it never forwards a request or serves a byte of content.
  #checkov:skip=CKV_AWS_103: Same listener: a redirect has no TLS to configure; the HTTPS listener enforces TLS 1.2+.
  load_balancer_arn = aws_lb.public.arn
  port              = 80
  protocol          = "HTTP"

  default_action {
    type = "redirect"

    redirect {
      protocol    = "HTTPS"
      port        = "443"
      status_code = "HTTP_301"
    }
  }
}

# /metrics, the admin API and the probes are for the inside of the VPC only:
# Prometheus scrapes the nodes directly, the ALB health-checks them on the
# node port, and operators run `bigtap sale ...` from a node. The public
# listener answers 404 without reaching a node. An ALB rule takes at most
# five values, hence the trailing wildcards ("/metrics*" covers /metrics and
# /metrics/...).
resource "aws_lb_listener_rule" "block_internal" {
  listener_arn = aws_lb_listener.https.arn
  priority     = 1

  condition {
    path_pattern {
      values = ["/metrics*", "/v1/admin*", "/healthz*", "/readyz*"]
    }
  }

  action {
    type = "fixed-response"

    fixed_response {
      content_type = "application/json"
      message_body = "{\"error\":\"not_found\"}"
      status_code  = "404"
    }
  }
}
