output "endpoint" {
  description = "Public HTTPS endpoint of the sale (point the buyers' DNS name at alb_dns_name)."
  value       = "https://${aws_lb.public.dns_name}"
}

output "alb_dns_name" {
  description = "DNS name of the ALB, for a CNAME/alias record."
  value       = aws_lb.public.dns_name
}

output "alb_zone_id" {
  description = "Hosted zone id of the ALB, for a Route 53 alias record."
  value       = aws_lb.public.zone_id
}

output "target_group_arn" {
  description = "Target group of the front tier (readiness health checks; `aws elbv2 describe-target-health`)."
  value       = aws_lb_target_group.serve.arn
}

output "store_address" {
  description = "MemoryDB cluster endpoint (TLS). Connect as rediss+cluster://<store_user_name>:<password from SSM>@<this>."
  value       = "${local.store_host}:${local.store_port}"
}

output "store_user_name" {
  description = "ACL user bigtap connects as."
  value       = local.store_user
}

output "sizing" {
  description = "What the sizing module computed, and the counts in force now."
  value = merge(module.sizing.summary, {
    node_count_in_force = local.node_desired
    node_override       = var.node_count_override
  })
}

output "schedule" {
  description = "The safety-net scale actions; an action whose time has already passed (or is within 10 minutes) is not created, see README."
  value = {
    scale_up_at        = local.scale_up_at
    scale_up_created   = local.create_scale_up
    scale_down_at      = local.scale_down_at
    scale_down_created = local.create_scale_down
    after_sale         = local.after_sale
  }
}

output "asg_names" {
  description = "Auto Scaling groups of the front tier and of the consumers."
  value = {
    serve  = aws_autoscaling_group.serve.name
    orders = aws_autoscaling_group.orders.name
  }
}

output "prometheus_fleet_plan_rules" {
  description = "Prometheus recording rules holding the planned fleet for the sale window (see monitoring/README.md)."
  value       = local.prometheus_fleet_plan_rules
}
