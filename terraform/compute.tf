# Two tiers from one bootstrap template:
#   serve  - the front tier, behind the ALB, sized by the sizing module and
#            moved by the sale schedule;
#   orders - the order-stream consumers: their own small ASG, because their
#            count follows winners per second, not buyers per second, they
#            must keep draining the stream after the front tier scales down,
#            they are not registered with the load balancer, and their role and
#            security group need none of the front tier's keys or ports.

locals {
  tiers = {
    serve = {
      instance_type  = var.node_instance_type
      security_group = aws_security_group.node.id
      profile        = aws_iam_instance_profile.instance["node"].arn
      metrics_port   = 8080
    }
    orders = {
      instance_type  = var.consumer_instance_type
      security_group = aws_security_group.consumer.id
      profile        = aws_iam_instance_profile.instance["consumer"].arn
      metrics_port   = 9091
    }
  }
}

resource "aws_launch_template" "tier" {
  for_each = local.tiers

  name_prefix            = "${var.name}-${each.key}-"
  description            = "bigtap ${each.key}"
  image_id               = var.ami_id # pinned: see the variable for how to move it
  instance_type          = each.value.instance_type
  update_default_version = true
  vpc_security_group_ids = [each.value.security_group]
  user_data              = base64encode(templatefile("${path.module}/templates/user_data.sh.tftpl", merge(local.common_user_data, { role = each.key })))

  iam_instance_profile {
    arn = each.value.profile
  }

  metadata_options {
    http_endpoint               = "enabled"
    http_tokens                 = "required" # IMDSv2 only
    http_put_response_hop_limit = 1
    instance_metadata_tags      = "disabled"
  }

  monitoring {
    enabled = true
  }

  block_device_mappings {
    device_name = "/dev/xvda"

    ebs {
      volume_size           = 20
      volume_type           = "gp3"
      encrypted             = true
      delete_on_termination = true
    }
  }

  tag_specifications {
    resource_type = "instance"
    tags = {
      Name                   = "${var.name}-${each.key}"
      "bigtap:role"          = each.key
      "bigtap:metrics_port"  = tostring(each.value.metrics_port)
      "bigtap:deployment"    = var.name
      "bigtap:artifact_hash" = substr(var.artifact_sha256, 0, 12)
    }
  }

  tag_specifications {
    resource_type = "volume"
    tags = {
      Name = "${var.name}-${each.key}"
    }
  }
}

resource "aws_autoscaling_group" "serve" {
  name                = "${var.name}-serve"
  vpc_zone_identifier = var.private_subnet_ids
  min_size            = local.node_min
  max_size            = local.node_max
  desired_capacity    = local.node_desired
  target_group_arns   = [aws_lb_target_group.serve.arn]
  # EC2 status plus bigtap's liveness (/healthz, reported by the instance
  # itself through bigtap-liveness.timer, see the user data). Never ELB:
  # the target group follows /readyz, which turns 503 on every node during a
  # store failover, and the ASG would then replace the whole fleet mid-sale.
  health_check_type         = "EC2"
  health_check_grace_period = 120
  default_instance_warmup   = 60
  wait_for_capacity_timeout = "20m"
  wait_for_elb_capacity     = local.node_desired # apply returns once the fleet answers /readyz
  termination_policies      = ["OldestLaunchTemplate", "OldestInstance"]
  enabled_metrics           = ["GroupDesiredCapacity", "GroupInServiceInstances", "GroupPendingInstances", "GroupTerminatingInstances"]

  launch_template {
    id      = aws_launch_template.tier["serve"].id
    version = aws_launch_template.tier["serve"].latest_version
  }

  # A new release (artifact) rolls the fleet launch-before-terminate. Never
  # during a sale: see RUNBOOK.
  instance_refresh {
    strategy = "Rolling"
    preferences {
      min_healthy_percentage = 100
      max_healthy_percentage = 150
    }
  }

  tag {
    key                 = "bigtap:role"
    value               = "serve"
    propagate_at_launch = true
  }

  lifecycle {
    precondition {
      condition     = local.sale_node_count >= length(var.private_subnet_ids)
      error_message = "node_count_override must give at least one node per availability zone."
    }
  }
}

resource "aws_autoscaling_group" "orders" {
  name                = "${var.name}-orders"
  vpc_zone_identifier = var.private_subnet_ids
  min_size            = module.sizing.consumer_count
  max_size            = module.sizing.consumer_count + 1
  desired_capacity    = module.sizing.consumer_count
  # EC2 status plus the consumer's liveness (its metrics listener answering),
  # reported by bigtap-liveness.timer: a crash-looping consumer is replaced.
  health_check_type         = "EC2"
  health_check_grace_period = 120
  termination_policies      = ["OldestLaunchTemplate", "OldestInstance"]

  launch_template {
    id      = aws_launch_template.tier["orders"].id
    version = aws_launch_template.tier["orders"].latest_version
  }

  instance_refresh {
    strategy = "Rolling"
    preferences {
      min_healthy_percentage = 100
      max_healthy_percentage = 200
    }
  }

  tag {
    key                 = "bigtap:role"
    value               = "orders"
    propagate_at_launch = true
  }
}

# ---------------------------------------------------------------------------
# Safety-net schedule (see the comment on locals in main.tf for the pitfalls).
# The apply the day before already sets the sized capacity; these actions
# restore it before the sale if anything shrank the fleet, and shrink it after
# the sale even if nobody remembers to.
# ---------------------------------------------------------------------------

resource "aws_autoscaling_schedule" "scale_up" {
  count = local.create_scale_up ? 1 : 0

  scheduled_action_name  = "${var.name}-before-sale"
  autoscaling_group_name = aws_autoscaling_group.serve.name
  start_time             = local.scale_up_at
  min_size               = local.sale_node_count
  max_size               = local.sale_node_max
  desired_capacity       = local.sale_node_count
}

resource "aws_autoscaling_schedule" "scale_down" {
  count = local.create_scale_down ? 1 : 0

  scheduled_action_name  = "${var.name}-after-sale"
  autoscaling_group_name = aws_autoscaling_group.serve.name
  start_time             = local.scale_down_at
  min_size               = var.idle_nodes
  max_size               = max(var.idle_nodes, length(var.private_subnet_ids))
  desired_capacity       = var.idle_nodes
}
